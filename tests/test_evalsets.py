"""The built-in eval sets: contents, fixed noise, near/far groups, and the offline path of downloadable sets."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext, build
from bench.errors import DataError


def test_default_sets_are_offline_and_start_with_mnist():
    from bench.datasets.benchmarks import run_defaults
    from bench.datasets.source import embedded

    names = run_defaults("mnist", embedded())
    assert names[0] == "mnist" and {"ood:fashion", "ood:uniform", "ood:gaussian"} <= set(names)
    assert not {"ood:kmnist", "ood:emnist-letters", "ood:cifar10-grey"} & set(names)


def test_noise_sets_are_fixed_in_range_and_far(tmp_path):
    ctx = EvalContext(data_dir=tmp_path, max_eval=100)
    for name in ("ood:uniform", "ood:gaussian"):
        a, b = build(name, ctx), build(name, EvalContext(data_dir=tmp_path, max_eval=100))
        assert a.images.shape == (100, 1, 28, 28) and torch.equal(a.images, b.images)
        assert a.images.min() >= 0 and a.images.max() <= 1 and a.kind == "ood" and a.group == "far"
        assert (a.labels == -1).all()
    g = build("ood:gaussian", EvalContext(max_eval=10_000)).images
    assert abs(float(g.mean()) - 0.5) < 0.01 and 0.2 < float(g.std()) < 0.25  # sigma 0.25, a little clipped


def test_mnist_and_fashion_are_the_embedded_test_sets():
    ctx = EvalContext(max_eval=0)
    mnist, fashion = build("mnist", ctx), build("ood:fashion", ctx)
    assert mnist.kind == "id" and len(mnist.labels) == 10_000 and mnist.labels.min() == 0
    assert fashion.kind == "ood" and fashion.group == "near" and len(fashion.images) == 10_000
    assert not torch.equal(mnist.images[:10], fashion.images[:10])


@pytest.mark.parametrize("name", ["ood:kmnist", "ood:emnist-letters", "ood:cifar10-grey"])
def test_downloadable_sets_offline_give_one_line_error(name, tmp_path):
    with pytest.raises(DataError, match="downloads are off") as e:
        build(name, EvalContext(data_dir=tmp_path, allow_download=False))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_and_extract_archive", no_network)
    monkeypatch.setattr(tvu, "download_url", no_network)
    with pytest.raises(DataError, match="could not be downloaded"):
        build("ood:kmnist", EvalContext(data_dir=tmp_path, allow_download=True))


def test_unknown_set_has_close_matches():
    from bench.errors import UsageError

    with pytest.raises(UsageError, match="did you mean ood:fashion"):
        evalsets.expand(["ood:fashon"])
