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
    return pinned(monkeypatch, idx_bytes(g.integers(0, 256, size=(5, 28, 28))), idx_bytes(np.arange(5)))


def pinned(monkeypatch, images: bytes, labels: bytes) -> dict[str, bytes]:
    """notmnist.FILES pointed at these files' md5s; the files by name, for ``place``."""
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



# --- the validation part (mdsens.val_ood=notmnist) and ood:notmnist-test --------------------------------------
@pytest.fixture
def glyphs(monkeypatch, tmp_path):
    """A data folder with 30 fake glyphs (bright squares on black, unlike digits) whose last 20 are the validation
    part (notmnist.N_VAL patched to 20)."""
    g = np.random.default_rng(1)
    arr = np.zeros((30, 28, 28), np.uint8)
    for k in range(30):
        r, c = g.integers(2, 14, size=2)
        arr[k, r:r + 12, c:c + 12] = 255
    files = pinned(monkeypatch, idx_bytes(arr), idx_bytes(np.arange(30) % 10))
    monkeypatch.setattr(notmnist, "N_VAL", 20)
    place(tmp_path / "notMNIST/raw", files, gz=True)
    return tmp_path, torch.from_numpy(arr).unsqueeze(1)


def test_split_keeps_the_last_glyphs_for_validation(glyphs):
    folder, arr = glyphs
    test, val = notmnist.split(notmnist.load(folder, allow_download=False))
    assert torch.equal(test.images, arr[:10]) and torch.equal(val.images, arr[10:])
    d = build("ood:notmnist-test", EvalContext(data_dir=folder, allow_download=False))
    assert torch.equal(d.images, arr[:10]) and d.group == "near" and d.name == "ood:notmnist-test"
    assert len(build("ood:notmnist", EvalContext(data_dir=folder, allow_download=False)).images) == 30


def test_split_refuses_a_set_no_larger_than_its_validation_part(fake, tmp_path):
    place(tmp_path, fake, gz=False)  # five glyphs, N_VAL 1,000
    with pytest.raises(DataError, match="validation part"):
        notmnist.split(notmnist.load(tmp_path, allow_download=False))


def test_mdsens_on_notmnist_validation_is_refused_beside_the_whole_test_set(glyphs, tmp_path_factory):
    from bench.errors import UsageError
    from bench.methods.mdsens import MDSEnsConfig, MDSEnsemble

    folder, _ = glyphs
    cfg = MDSEnsConfig(val_ood="notmnist", n_val=20)
    MDSEnsemble.check_eval_sets(cfg, ["mnist", "ood:notmnist-test"], folder)  # disjoint: accepted
    with pytest.raises(UsageError, match="ood:notmnist-test"):
        MDSEnsemble.check_eval_sets(cfg, ["mnist", "ood:notmnist"], folder)
    with pytest.raises(UsageError, match="mdsens.n_val=21"):
        MDSEnsemble.check_eval_sets(MDSEnsConfig(val_ood="notmnist", n_val=21), ["mnist"], folder)
    with pytest.raises(DataError, match="downloads are off|could not be downloaded"):  # no files: before training
        notmnist.load(tmp_path_factory.mktemp("empty"), allow_download=False)
    MDSEnsemble.check_eval_sets(MDSEnsConfig(), ["mnist", "ood:notmnist"], folder)  # fgsm: nothing to check


def test_a_run_refuses_mdsens_on_notmnist_validation_with_ood_notmnist_before_training(glyphs):
    from bench.config import resolve
    from bench.errors import UsageError
    from bench.methods import METHODS
    from bench.run.grid import check_methods_eval_sets

    folder, _ = glyphs
    configs = {n: METHODS.get(n).Config for n in METHODS.names()}
    cfg = resolve([{"methods": ["msp", "mdsens"], "mdsens": {"val_ood": "notmnist", "n_val": 20},
                    "data_dir": str(folder)}], configs)
    check_methods_eval_sets(cfg, ["msp", "mdsens"], ["mnist", "ood:notmnist-test"])
    with pytest.raises(UsageError, match="mdsens.val_ood=notmnist"):
        check_methods_eval_sets(cfg, ["msp", "mdsens"], ["mnist", "ood:notmnist"])


def test_mdsens_fits_its_weights_on_the_notmnist_validation_glyphs(glyphs, tiny, cached_tiny_ctx):
    import dataclasses

    from bench.errors import DataError as DE
    from bench.methods.mdsens import MDSEnsConfig, MDSEnsemble

    folder, _ = glyphs
    train, val, _ = tiny
    ctx = dataclasses.replace(cached_tiny_ctx, data_dir=folder)
    on_glyphs = MDSEnsemble(MDSEnsConfig(val_ood="notmnist", n_val=20), backbone="lenet5", seed=0).fit(train, val, ctx)
    on_fgsm = MDSEnsemble(MDSEnsConfig(n_val=20), backbone="lenet5", seed=0).fit(train, val, ctx)
    assert all(torch.equal(a, b) for a, b in zip(on_glyphs.state["means"], on_fgsm.state["means"]))
    assert not torch.equal(on_glyphs.state["weights"], on_fgsm.state["weights"])
    # fitted to tell digits from these glyphs: the validation glyphs score below the validation digits
    x_out = notmnist.split(notmnist.load(folder, allow_download=False))[1].images.float() / 255
    conf_out = on_glyphs.predict(x_out).confidence
    conf_in = on_glyphs.predict(val.images[:20]).confidence
    pairs = (conf_in[:, None] > conf_out[None, :]).float().mean()  # the AUROC of digits vs glyphs
    assert float(pairs) > 0.95
    no_folder = dataclasses.replace(ctx, data_dir=None)
    with pytest.raises(DE, match="--data-dir"):
        MDSEnsemble(MDSEnsConfig(val_ood="notmnist", n_val=20), backbone="lenet5", seed=1).fit(train, val, no_folder)


def test_the_cli_refuses_mdsens_on_notmnist_validation_beside_ood_notmnist_in_one_line(glyphs, tmp_path):
    """The runner calls the methods' eval-set checks before anything is trained or written."""
    from _tiny import run_main

    folder, _ = glyphs
    out = tmp_path / "run"
    code, _, err = run_main(["run", "--profile", "smoke", "--methods", "msp,mdsens", "--set", "mdsens.val_ood=notmnist",
                             "--set", "mdsens.n_val=20", "--datasets", "mnist,ood:notmnist", "--data-dir", str(folder),
                             "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2 and "test on ood:notmnist-test" in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "manifest.json").exists()
