"""A user's own labelled dataset (``--data NAME=PATH``, datasets/user_data.py): reading each format, the documented
train/test cut, refusals (one line, exit code 2, before any training), cache keys and --resume by content, the
shape-generic eval sets at the data's shape, and one tiny end-to-end run. Data: tiny arrays written to tmp_path."""

from __future__ import annotations

import csv
import gzip
import json
import struct

import numpy as np
import pytest
import torch

from _tiny import run_main
from bench.datasets import evalsets, source, user_data
from bench.datasets.evalsets import EvalContext
from bench.datasets.occlusion import square_for
from bench.datasets.splits import SplitSpec
from bench.errors import UsageError
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import FitContext

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


@pytest.fixture(autouse=True)
def registry_untouched(monkeypatch):
    """A run's own sets (--data NAME, --ood NAME) live in the run's copy of the registry: bench's own is never
    changed, whatever a test runs."""
    before = (dict(evalsets.EVAL_SETS._items), dict(evalsets.EVAL_SETS._docs))
    monkeypatch.setattr(user_data, "_LOADED", {})
    yield
    assert (evalsets.EVAL_SETS._items, evalsets.EVAL_SETS._docs) == before


def _learnable(n: int, shape=(1, 8, 8), classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k lights up row band k: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 40, (n, *shape)).astype(np.uint8)
    band = shape[1] // classes
    for i, k in enumerate(y):
        x[i, :, k * band : (k + 1) * band] = 230
    return x, y.astype(np.int64)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _idx(path, arr: np.ndarray):
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))
    return path


def _png(path, arr: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# --- reading ------------------------------------------------------------------------------------------------------
def test_npz_pool_is_cut_by_the_documented_seeded_rule(tmp_path):
    x = np.arange(10 * 16, dtype=np.uint8).reshape(10, 4, 4)  # image i is recognisable by its first pixel 16 i
    y = np.array([0, 1] * 5)
    d = user_data.load(f"toy={_npz(tmp_path / 'a.npz', images=x, labels=y)}")
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()  # the rule: seed 0, first 20% test
    assert d.test.images[:, 0, 0, 0].tolist() == [16 * i for i in perm[:2]]
    assert d.train.images[:, 0, 0, 0].tolist() == [16 * i for i in perm[2:]]
    assert d.test.labels.tolist() == [y[i] for i in perm[:2]]
    s = d.spec
    assert (s.shape, s.num_classes, s.n_train, s.n_test, s.format) == ((1, 4, 4), 2, 8, 2, "npz")
    assert d.train.images.dtype == torch.uint8


def test_npz_given_split_float_pixels_and_rgb(tmp_path):
    xtr = np.full((4, 3, 5, 6), 0.5, dtype=np.float32)
    xtr[0, 2, 0, 0] = 1.0
    path = _npz(tmp_path / 'b.npz', x_train=xtr, y_train=np.array([0, 1, 2, 0]), x_test=xtr[:2],
                y_test=np.array([1, 2]))
    d = user_data.load(f"rgb={path}")
    assert d.spec.shape == (3, 5, 6) and d.spec.format == "npz-split" and d.spec.num_classes == 3
    assert (d.spec.n_train, d.spec.n_test) == (4, 2)
    assert int(d.train.images[0, 1, 0, 0]) == 128 and int(d.train.images[0, 2, 0, 0]) == 255  # round(0.5 * 255)
    assert d.test.labels.tolist() == [1, 2]


def test_idx_pair_and_quad(tmp_path):
    x = np.arange(6 * 9, dtype=np.uint8).reshape(6, 3, 3)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=">i4")
    imgs, labs = _idx(tmp_path / "i.gz", x), _idx(tmp_path / "l.gz", y)
    pair = user_data.load(f"p={imgs},{labs}")
    assert pair.spec.format == "idx" and pair.spec.shape == (1, 3, 3) and pair.spec.n_test == 1  # round(6 * 0.2)
    quad = user_data.load(f"q={imgs},{labs},{imgs},{labs}")
    assert quad.spec.format == "idx-split" and quad.spec.n_test == 6
    assert torch.equal(quad.test.images[:, 0], torch.from_numpy(x))


def test_image_folder_classes_sorted_and_grey_or_colour(tmp_path):
    root = tmp_path / "f"
    for cls, value in (("cat", 10), ("ant", 200)):
        for i in range(3):
            _png(root / cls / f"{i}.png", np.full((4, 5), value + i, dtype=np.uint8))
    d = user_data.load(f"f={root}")
    assert d.spec.classes == ("ant", "cat") and d.spec.shape == (1, 4, 5)  # H=4, W=5
    every = torch.cat([d.train.images, d.test.images])[:, 0, 0, 0]
    labels = torch.cat([d.train.labels, d.test.labels])
    assert all((v >= 200) == (lab == 0) for v, lab in zip(every.tolist(), labels.tolist()))  # ant -> 0
    _png(root / "cat" / "rgb.png", np.zeros((4, 5, 3), dtype=np.uint8) + np.array([255, 0, 0], dtype=np.uint8))
    colour = user_data.load(f"f={root}")
    assert colour.spec.shape == (3, 4, 5)  # one colour image makes the set RGB; greys repeat on every channel
    split_root = tmp_path / "g"
    for part in ("train", "test"):
        for cls in ("a", "b"):
            _png(split_root / part / cls / "0.png", np.full((3, 3), 9, dtype=np.uint8))
    g = user_data.load(f"g={split_root}")
    assert g.spec.format == "folder-split" and (g.spec.n_train, g.spec.n_test) == (2, 2)


# --- bad input: one line, exit code 2, before any training ------------------------------------------------------------
RUN = ["run", "--profile", "smoke", "--device", "cpu", "--no-progress", "--backbone", "tinycnn"]


def _bad_world(tmp_path) -> dict[str, str]:
    x, y = _learnable(30)
    w = {
        "short": _npz(tmp_path / "short.npz", images=x, labels=y[:-1]),
        "floaty": _npz(tmp_path / "floaty.npz", images=x, labels=y.astype(np.float64)),
        "one": _npz(tmp_path / "one.npz", images=x, labels=np.zeros(30, dtype=np.int64)),
        "last": _npz(tmp_path / "last.npz", images=np.zeros((30, 8, 8, 3), np.uint8), labels=y),
        "tiny": _npz(tmp_path / "tiny.npz", images=x[:4], labels=y[:4]),
        "good": _npz(tmp_path / "good.npz", images=x, labels=y),
        "rgbood": _npz(tmp_path / "rgbood.npz", images=np.zeros((5, 3, 8, 8), np.uint8)),
        "empty": tmp_path / "empty",
        "mixed": tmp_path / "mixed",
    }
    w["empty"].mkdir()
    (w["empty"] / "a").mkdir()
    _png(w["mixed"] / "a" / "0.png", np.zeros((8, 8), np.uint8))
    _png(w["mixed"] / "b" / "0.png", np.zeros((9, 8), np.uint8))
    return {k: str(v) for k, v in w.items()}


BAD = [
    (["--data", "d={short}"], "29 labels for 30 images"),
    (["--data", "d={floaty}"], "labels must be integers"),
    (["--data", "d={one}"], "at least 2 classes"),
    (["--data", "d={last}"], "channels-last"),
    (["--data", "d={mixed}"], "images of different sizes"),
    (["--data", "d={empty}"], "holds no image files"),
    (["--data", "d={tiny}"], "too few for the split"),
    (["--data", "d={good}", "--folds", "40"], "folds=40 is more than the 24 training images"),
    (["--data", "d={good}", "--datasets", "d,pmnist:horizontal"], "pmnist:horizontal is made for MNIST"),
    (["--data", "d={good}", "--datasets", "ood:fashion"], "ood:fashion is made for MNIST"),
    (["--data", "d={good}", "--datasets", "mnistc:fog"], "mnistc:fog is made for MNIST"),
    (["--data", "d={good}", "--backbone", "lenet"], "backbone lenet is built for 28x28 grey images"),
    (["--data", "d={good}", "--methods", "oodgan"], "oodgan works on 28x28 grey images only"),
    (["--data", "d={good}", "--methods", "trustgan"], "trustgan works on 28x28 grey images only"),
    (["--data", "d={good}", "--ood", "c={rgbood}"], "ood:c is 3x8x8 but --data d is 1x8x8"),
    (["--data", "mnist={good}"], "mnist is a built-in eval set"),
    (["--data", "d"], "is malformed; use --data NAME=PATH"),
    (["--ood-resize"], "--ood-resize goes with --data"),
]


@pytest.mark.parametrize("args,text", BAD, ids=[t for _, t in BAD])
def test_bad_input_is_one_line_exit_2_before_training(tmp_path, args, text):
    w = _bad_world(tmp_path)
    out = tmp_path / "run"
    code, _, err = run_main([*RUN, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                             *[a.format(**w) for a in args]])
    assert code == 2, err
    assert text in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("*.pt"))  # nothing trained


def test_ood_resize_converts_and_is_in_the_manifest_config(tmp_path):
    x, y = _learnable(30)
    d = user_data.load(f"d={_npz(tmp_path / 'd.npz', images=x, labels=y)}")
    ood = np.zeros((2, 3, 16, 16), np.uint8)
    ood[:, 0] = 255  # pure red: luma 0.299 * 255 = 76.2 -> 76
    got = user_data.read_ood(_npz(tmp_path / "o.npz", images=ood), d.spec, True, "ood:o")
    assert got.shape == (2, 1, 8, 8) and int(got.min()) == int(got.max()) == 76
    with pytest.raises(UsageError, match="pass --ood-resize"):
        user_data.read_ood(tmp_path / "o.npz", d.spec, False, "ood:o")


# --- identity: cache keys and --resume -------------------------------------------------------------------------
def test_same_name_and_path_other_content_gives_other_cache_keys(tmp_path):
    x, y = _learnable(30)
    path = tmp_path / "d.npz"
    keys = []
    for pixels in (x, 255 - x):
        d = user_data.load(f"d={_npz(path, images=pixels, labels=y)}")
        ctx = FitContext(split_id=SplitSpec(data=d.spec.split_name).split_id)
        keys.append((d.spec.sha256, ctx.baseline_key("tinycnn", 3, 0)))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    assert SplitSpec().split_id.startswith("mnist-train:")  # MNIST's keys (and cached checkpoints) unchanged


def test_end_to_end_run_then_resume_on_other_content_is_refused(tmp_path):
    x, y = _learnable(60)
    path = _npz(tmp_path / "d.npz", images=x, labels=y)
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [*RUN, "--methods", "msp,energy", "--data", f"toy={path}", "--datasets", "toy,ood:uniform,fgsm:eps=0.1,"
            "occlusion:random-squares=0.3", "--set", "eval.max_eval=20", "--folds", "2", "--out", str(out),
            "--cache-dir", str(cache)]
    code, stdout, err = run_main(args)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["shape"] == [1, 8, 8] and manifest["data"]["num_classes"] == 3
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    sets = {r["eval_set"] for r in rows}
    assert {r["fold"] for r in rows} == {"0", "1"}  # k-fold over the data's training part
    assert {"toy", "ood:uniform", "fgsm:eps=0.1", "occlusion:random-squares=0.3"} <= sets
    assert "toy test: accuracy" in stdout
    from bench.run.loading import load_method

    fitted = load_method(out, "msp")  # rebuilt at the data's shape and classes, from the manifest
    assert fitted.predict(torch.from_numpy(x[:5])).probs.shape == (5, 3)
    code, _, err = run_main(["predict", str(path), "--run", str(out), "--method", "msp"])
    assert code == 2 and "reads MNIST-like images only" in err
    _npz(path, images=255 - x, labels=y)  # same name and path, other content
    code, _, err = run_main([*args, "--resume"])
    assert code == 2 and "cannot resume" in err and "sha256" in err


# --- shape-generic sets and backbones at the data's shape ------------------------------------------------------
def test_generic_sets_are_made_at_the_data_shape(tmp_path):
    x, y = _learnable(40, shape=(3, 12, 12), classes=2)
    d = source.from_files(f"rgbtoy={_npz(tmp_path / 'c.npz', images=x, labels=y)}")
    ctx = EvalContext(max_eval=8, data=d, sets=source.run_sets(d))
    for name in ("rgbtoy", "ood:uniform", "ood:gaussian", "occlusion:random-squares=0.25"):
        assert tuple(evalsets.build(name, ctx).images.shape[1:]) == (3, 12, 12), name
    occ = evalsets.build("occlusion:random-squares=0.25", ctx)
    assert square_for(12, 12) == (3, 3) and square_for(28, 28) == (7, 7) and square_for(8, 8) == (2, 2)
    removed = (occ.images == 0).all(1).flatten(1).float().mean(1)  # every channel zeroed at a removed pixel
    assert (removed >= 0.25).all() and (removed < 0.25 + 9 / 144).all()  # overshoot under one 3x3 square

    class Fitted:  # what the model-dependent sets read from a method
        num_classes = 2

        def __init__(self):
            self.classifier = create_backbone("tinycnn", 2, shape=d.shape).eval()

    for name in ("fgsm:eps=0.1", "pgd:eps=0.1,steps=2", "fooling:n=4,steps=2", "uap:xi=0.1,p=inf,n=8,passes=1"):
        assert tuple(evalsets.build(name, ctx, Fitted()).images.shape[1:]) == (3, 12, 12), name


def test_backbones_take_the_data_shape_or_refuse():
    net = create_backbone("timm:resnet10t", 4, shape=(3, 8, 8))
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 4) and net.input_shape == (3, 8, 8)
    assert create_backbone("tinycnn", 5, shape=(3, 8, 8))(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    for name in ("lenet", "mlp", "smallconvnet", "hg-mlp"):
        with pytest.raises(UsageError, match=f"backbone {name} is built for 28x28 grey images"):
            create_backbone(name, 4, shape=(3, 8, 8))
    assert create_backbone("lenet", 10)(torch.rand(1, 1, 28, 28)).shape == (1, 10)  # MNIST's shape by default


def test_evaluate_a_users_model_on_a_users_data(tmp_path):
    from torch import nn

    import bench

    x, y = _learnable(40, shape=(3, 6, 6), classes=2)
    path = _npz(tmp_path / "e.npz", images=x, labels=y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    rows = bench.evaluate(model, methods=["msp"], datasets=["e", "fgsm:eps=0.1"], data=f"e={path}",
                          device="cpu", options={"eval.max_eval": 8})
    acc = rows.query("eval_set == 'e' and metric == 'accuracy'")["value"].item()
    test = user_data.load(f"e={path}").test
    with torch.no_grad():  # the same accuracy computed here from the model's own outputs
        expected = 100 * float((model(test.images[:8].float() / 255).argmax(1) == test.labels[:8]).float().mean())
    assert acc == pytest.approx(expected)
    assert set(rows["eval_set"]) == {"e", "fgsm:eps=0.1", "cost"}
    with pytest.raises(UsageError, match="returns 2 logits per image but e has 3 classes|fails on e images"):
        bad = np.concatenate([y[:-1], [2]])  # a third class: the model's 2 logits no longer fit
        bench.evaluate(model, methods=["msp"], data=f"e={_npz(tmp_path / 'f.npz', images=x, labels=bad)}",
                       device="cpu")
