"""Benchmarks declared as data and the run's data as one value (issue 31, items 1-2): ``bench list benchmarks``,
``--benchmark`` (default mnist: the default sets of before), no module-level registry changed by a run, no context
variable carrying the image shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _tiny import run_main
from bench.datasets import evalsets
from bench.datasets.benchmarks import BENCHMARKS, GROUPS, Benchmark, run_defaults
from bench.datasets.source import embedded, resolve, run_sets
from bench.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_mnist_benchmark_runs_the_default_sets_of_before():
    """Before benchmarks were declared a run without --datasets took MNIST test plus every offline OOD set, in the
    registry's order: these four (notMNIST joins when its files are in --data-dir, tests/test_notmnist.py)."""
    assert run_defaults("mnist", embedded(), run_sets(embedded())) == ["mnist", "ood:fashion", "ood:gaussian",
                                                                       "ood:uniform"]


def test_every_declared_set_exists_and_groups_are_known():
    for name in BENCHMARKS.names():
        b = BENCHMARKS.get(name)
        assert b.group("id"), name
        for group, sets in b.groups:
            assert group in GROUPS
            evalsets.expand(list(sets))  # raises for an unknown set or bad parameters
    with pytest.raises(ValueError, match="unknown group"):
        Benchmark("x", "x", "mnist", (("nearish", ("mnist",)),))


def test_data_source_is_one_small_value():
    import pickle

    class Cfg:
        data = ""
        benchmark = "mnist"

    src = resolve(Cfg())
    assert (src.name, src.shape, src.num_classes, src.split_name) == ("mnist", (1, 28, 28), 10, "mnist-train")
    assert len(pickle.dumps(src)) < 1000  # workers get the value and load the images themselves
    assert src.part("test").images.shape == (10_000, 1, 28, 28)


def test_list_benchmarks_and_unknown_benchmark(capsys):
    code, out, _ = run_main(["list", "benchmarks"])
    assert code == 0 and "mnist" in out and "near" in out and "ood:fashion" in out
    code, _, err = run_main(["run", "--benchmark", "mnits", "--profile", "smoke", "--no-progress"])
    assert code == 2 and "unknown benchmark 'mnits'; did you mean mnist?" in err


def test_no_context_variable_carries_state():
    """The image shape travels as a value (a method's ``shape``, ``create_backbone(shape=...)``)."""
    offenders = [str(p) for folder in ("bench", "methods", "datasets") for p in (REPO / folder).rglob("*.py")
                 if "ContextVar" in p.read_text()]
    assert not offenders


def test_a_runs_own_sets_never_change_the_shipped_registry(tmp_path):
    """A user's --data test part and --ood sets live in the run's copy (runs with them: tests/test_user_data.py,
    whose every test checks the registry afterwards, and tests/test_adversarial.py)."""
    import numpy as np

    np.savez(tmp_path / "d.npz", images=np.zeros((20, 8, 8), np.uint8), labels=np.arange(20) % 2)
    (tmp_path / "o").mkdir()
    before = (dict(evalsets.EVAL_SETS._items), dict(evalsets.EVAL_SETS._docs))
    from bench.datasets.source import from_files

    src = from_files(f"mine={tmp_path / 'd.npz'}")
    sets = run_sets(src, [f"extra={tmp_path / 'o'}"])
    assert {"mine", "ood:extra"} <= set(sets.names()) and src.shape == (1, 8, 8)
    assert (evalsets.EVAL_SETS._items, evalsets.EVAL_SETS._docs) == before


def test_data_and_another_benchmark_exclude_each_other(monkeypatch):
    import bench.datasets.benchmarks as b
    from bench.config import resolve as resolve_cfg

    other = Benchmark("other", "o", "mnist", (("id", ("mnist",)),))
    monkeypatch.setattr(b, "BENCHMARKS", BENCHMARKS.extended({"other": (other, "o")}))
    assert resolve_cfg([{"benchmark": "other"}], {}).benchmark == "other"
    with pytest.raises(UsageError, match="drop --benchmark other"):
        resolve_cfg([{"data": "d=x.npz", "benchmark": "other"}], {})


def test_fashion_is_a_second_world():
    from bench.datasets.evalsets import EvalContext, build
    from bench.datasets.mnist import load_embedded

    src = embedded("fashion")
    assert (src.name, src.split_name, src.num_classes, src.n_train) == ("fashion", "fashion-train", 10, 60_000)
    train = src.part("train")
    assert train.images.shape == (60_000, 1, 28, 28) and sorted(train.labels.unique().tolist()) == list(range(10))
    assert run_defaults("fashion", src, run_sets(src)) == ["fashion", "ood:gaussian", "ood:mnist", "ood:uniform"]
    ctx = EvalContext(max_eval=50, data=src, sets=run_sets(src))
    fashion = build("fashion", ctx)
    assert fashion.kind == "id" and (fashion.labels == load_embedded("fashion", "test").labels[:50]).all()
    mnist_as_ood = build("ood:mnist", ctx)
    assert mnist_as_ood.kind == "ood" and mnist_as_ood.group == "near" and (mnist_as_ood.labels == -1).all()
    shifted = build("mnistc:rotate", ctx)  # the MNIST-C corruptions of Fashion-MNIST's test images, its labels
    assert torch.equal(shifted.labels, fashion.labels) and not torch.equal(shifted.images, fashion.images)
    with pytest.raises(UsageError, match="use ood:mnist"):
        build("mnist", ctx)  # MNIST's labels mean nothing to a Fashion-MNIST classifier
    with pytest.raises(UsageError, match="use ood:fashion"):
        build("fashion", EvalContext(max_eval=5))  # and the other way round


def test_mnistc_of_another_dataset_has_its_own_cache_file(tmp_path):
    from bench.datasets.mnistc import cache_path

    mnist, fashion = cache_path(tmp_path, "rotate"), cache_path(tmp_path, "rotate", data="fashion")
    assert fashion.parent == mnist.parent and fashion.name == "fashion-" + mnist.name  # MNIST's name is as it was


def test_resume_checks_the_benchmark_data(tmp_path):
    from bench.datasets.user_data import check_resume

    check_resume({"config": {"benchmark": "fashion"}}, embedded("fashion"), tmp_path)
    check_resume({"config": {}}, embedded("mnist"), tmp_path)  # a manifest from before benchmarks: MNIST
    with pytest.raises(UsageError, match="it was run on Fashion-MNIST, the data now is MNIST"):
        check_resume({"config": {"benchmark": "fashion"}}, embedded("mnist"), tmp_path)
    with pytest.raises(UsageError, match="it was run on MNIST, the data now is Fashion-MNIST"):
        check_resume({"config": {"benchmark": "mnist"}}, embedded("fashion"), tmp_path)


@pytest.mark.e2e
def test_a_fashion_run_end_to_end(tmp_path):
    import json

    args = ["run", "--benchmark", "fashion", "--profile", "smoke", "--methods", "msp,energy", "--datasets",
            "fashion,ood:mnist", "--device", "cpu", "--no-progress", "--jobs", "1", "--set", "split.max_train=500",
            "--set", "eval.max_eval=100", "--set", "eval.cost_images=50", "--out", str(tmp_path / "r"),
            "--cache-dir", str(tmp_path / "c")]
    code, _, err = run_main(args)
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["config"]["benchmark"] == "fashion"
    rows = (tmp_path / "r" / "results.csv").read_text()
    assert ",fashion,none,,accuracy," in rows and ",ood:mnist,ood,,ood_auroc," in rows
    code, out, err = run_main([*args, "--resume"])  # an interrupted Fashion-MNIST run resumes on its own data
    assert code == 0 and "0 cells computed" in out, err
    # its checkpoints are its own: the split of Fashion-MNIST's training images is in every cache key
    from bench.datasets.splits import SplitSpec
    from bench.methods.core.base import FitContext

    fashion = FitContext(split_id=SplitSpec(data="fashion-train").split_id).baseline_key("lenet", 10, 0)
    mnist = FitContext(split_id=SplitSpec().split_id).baseline_key("lenet", 10, 0)
    assert fashion != mnist
