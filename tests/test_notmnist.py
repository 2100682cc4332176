"""notMNIST (ood:notmnist): read from the user's data folder in MNIST's IDX format, checked by content hash, never
embedded. Small generated IDX files stand in for it here; the real files are used when ../shared/data has them."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.datasets import notmnist
from bench.datasets.evalsets import EvalContext, build
from bench.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of uint8 data (magic 0x08, one 4-byte big-endian size per dimension)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fake(monkeypatch):
    """Five 28x28 glyphs and labels, with notmnist.FILES pointing at their md5 (the real hashes name 10k images)."""
    g = np.random.default_rng(0)
    images = idx_bytes(g.integers(0, 256, size=(5, 28, 28)))
    labels = idx_bytes(np.arange(5))
    monkeypatch.setattr(notmnist, "FILES", {
        "images": ("t10k-images-idx3-ubyte", hashlib.md5(images).hexdigest()),
        "labels": ("t10k-labels-idx1-ubyte", hashlib.md5(labels).hexdigest())})
    return {"t10k-images-idx3-ubyte": images, "t10k-labels-idx1-ubyte": labels}


def place(folder: Path, files: dict[str, bytes], gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("sub", ["notMNIST/raw", "notMNIST", "."])
@pytest.mark.parametrize("gz", [True, False])
def test_every_layout_reads_the_same_images(fake, tmp_path, sub, gz):
    place(tmp_path / sub, fake, gz)
    assert notmnist.present(tmp_path)
    d = build("ood:notmnist", EvalContext(data_dir=tmp_path, allow_download=False))
    pixels = np.frombuffer(fake["t10k-images-idx3-ubyte"][16:], np.uint8)  # after the 16-byte header
    expected = torch.from_numpy(pixels.reshape(5, 1, 28, 28).copy())
    assert d.kind == "ood" and d.group == "near" and d.shift == "ood"
    assert torch.equal(d.images, expected) and d.labels.tolist() == [-1] * 5


def test_max_eval_caps_the_set(fake, tmp_path):
    place(tmp_path / "notMNIST/raw", fake, gz=True)
    assert len(build("ood:notmnist", EvalContext(data_dir=tmp_path, max_eval=3, allow_download=False)).images) == 3


@pytest.mark.parametrize("gz", [True, False])
def test_a_wrong_file_is_refused_in_one_line(fake, tmp_path, gz):
    bad = dict(fake)
    bad["t10k-images-idx3-ubyte"] = fake["t10k-images-idx3-ubyte"][:-1] + b"\x01"  # one pixel changed
    place(tmp_path / "notMNIST/raw", bad, gz)
    with pytest.raises(DataError, match="not the notMNIST file") as e:
        build("ood:notmnist", EvalContext(data_dir=tmp_path, allow_download=False))
    assert "t10k-images-idx3-ubyte" in str(e.value) and "\n" not in str(e.value)


def test_a_broken_gzip_is_refused_in_one_line(fake, tmp_path):
    place(tmp_path / "notMNIST/raw", fake, gz=True)
    (tmp_path / "notMNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(DataError, match="cannot be read") as e:
        build("ood:notmnist", EvalContext(data_dir=tmp_path, allow_download=False))
    assert "\n" not in str(e.value)


def test_missing_files_say_where_to_put_them(tmp_path):
    assert not notmnist.present(tmp_path)
    with pytest.raises(DataError, match="downloads are off") as e:
        build("ood:notmnist", EvalContext(data_dir=tmp_path, allow_download=False))
    msg = str(e.value)
    assert f"{tmp_path / 'notMNIST' / 'raw'}/" in msg and "t10k-images-idx3-ubyte.gz" in msg
    assert "davidflanagan/notMNIST-to-MNIST" in msg and "\n" not in msg


def test_a_failed_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(notmnist, "_fetch", offline)
    with pytest.raises(DataError, match="could not be downloaded") as e:
        build("ood:notmnist", EvalContext(data_dir=tmp_path, allow_download=True))
    assert str(tmp_path / "notMNIST" / "raw") in str(e.value) and "\n" not in str(e.value)


def test_download_is_verified_before_it_is_written(fake, tmp_path, monkeypatch):
    urls = []

    def serve(url, bad=False):
        urls.append(url)
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        return gzip.compress(fake[name] + (b"x" if bad else b""))

    monkeypatch.setattr(notmnist, "_fetch", lambda url: serve(url, bad=True))
    with pytest.raises(DataError, match="not the notMNIST file"):
        build("ood:notmnist", EvalContext(data_dir=tmp_path))
    assert not list(tmp_path.rglob("*ubyte*"))  # nothing written
    monkeypatch.setattr(notmnist, "_fetch", serve)
    d = build("ood:notmnist", EvalContext(data_dir=tmp_path))
    assert len(d.images) == 5 and notmnist.present(tmp_path)
    assert sorted(p.name for p in (tmp_path / "notMNIST/raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(u.startswith("https://raw.githubusercontent.com/davidflanagan/notMNIST-to-MNIST/") for u in urls)


def test_default_sets_add_notmnist_only_when_its_files_are_there(fake, tmp_path):
    before = ["mnist", "ood:fashion", "ood:gaussian", "ood:uniform"]  # the default sets without notMNIST
    assert _defaults(tmp_path) == before == _defaults(None)
    place(tmp_path / "notMNIST/raw", fake, gz=True)
    assert _defaults(tmp_path) == [*before, "ood:notmnist"]


def test_the_project_does_not_embed_notmnist():
    root = Path(__file__).resolve().parents[1]
    assert not [p for p in (root / "datasets").rglob("*") if "notmnist" in p.name.lower() and p.suffix != ".py"]


@pytest.mark.skipif(not (SHARED / "notMNIST").is_dir(), reason="../shared/data/notMNIST is not beside the clone")
def test_the_real_notmnist_test_sample():
    d = build("ood:notmnist", EvalContext(data_dir=SHARED, allow_download=False))
    assert d.images.shape == (10_000, 1, 28, 28) and d.images.dtype == torch.uint8
    raw = notmnist.load(SHARED, allow_download=False)
    assert sorted(raw.labels.unique().tolist()) == list(range(10))  # letters A-J
    assert _defaults(SHARED)[-1] == "ood:notmnist"


def _defaults(data_dir):
    """A default MNIST run's eval sets with ``data_dir`` as its data folder (datasets/benchmarks.py)."""
    from bench.datasets.benchmarks import run_defaults
    from bench.datasets.source import embedded

    return run_defaults("mnist", embedded(), None, data_dir)

