"""What bench trusts and what it never does with files others share (issue 35, item 0): models you bring run under
the default ``--jobs auto`` with several models and seeds; a crafted checkpoint or .pt2 never runs code; commands
never write over a user's folder; names never become path components unchecked; ``--resume`` of a ``--model`` run
refuses another model under the same name; ``--resume`` on nothing says so."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import bench
from _tiny import run_main
from bench.cache import CheckpointCache
from bench.errors import UsageError
from bench.run import executors

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)

FAST = {"eval.max_eval": 100, "split.max_train": 300, "eval.cost_images": 50}
REPO = Path(__file__).resolve().parents[1]


class Small(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Marker:
    """A pickle that, if ever unpickled, creates the file it names: how a crafted file would run code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_torch_bytes(marker: Path, wrap=lambda x: x) -> bytes:
    buf = io.BytesIO()
    torch.save(wrap(Marker(marker)), buf)
    return buf.getvalue()


# --- several user models / seeds under the default job count -------------------------------------------------------
def test_several_models_and_seeds_under_auto_jobs(monkeypatch):
    """``--jobs auto`` picks several workers on a multi-core machine (the suite pins it to 1 elsewhere): the user's
    models are objects of this process, so their units must still run here."""
    monkeypatch.setattr(executors, "auto_jobs", lambda n_units, device: 2)
    df = bench.evaluate([Small(0), Small(1)], names=["a", "b"], methods="msp", datasets="mnist", device="cpu",
                        seed=[0, 1], options=FAST)
    assert set(df.method) == {"msp@a", "msp@b"} and set(df.seed) == {0, 1}


def test_cli_several_models_with_the_real_default_jobs(tmp_path):
    """``bench run --model a --model b`` (docs/byom.md's example) in a child process, where ``--jobs auto`` is the
    real rule (two workers on a 2-core machine)."""
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"m{i}.pt")
        torch.jit.save(torch.jit.trace(Small(i).eval(), torch.rand(2, 1, 28, 28)), str(paths[-1]))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--profile", "smoke", "--methods", "msp", "--datasets", "mnist",
         "--device", "cpu", "--no-progress", "--model", str(paths[0]), "--model", str(paths[1]), "--seeds", "0,1",
         "--set", "eval.max_eval=100", "--set", "eval.cost_images=50", "--set", "split.max_train=300",
         "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    methods = {line.split(",")[1] for line in (out / "results.csv").read_text().splitlines()[1:]}
    assert methods == {"msp@m0", "msp@m1"}


# --- nothing a colleague shares runs code ----------------------------------------------------------------------------
def test_crafted_checkpoint_in_a_cache_is_not_unpickled(tmp_path):
    marker = tmp_path / "ran"
    cache = CheckpointCache(tmp_path / "cache")
    cache.root.mkdir()
    cache.path("baseline-x").write_bytes(crafted_torch_bytes(marker, lambda m: {"model": m}))
    with pytest.warns(UserWarning, match="never unpickles"):
        assert cache.get("baseline-x") is None
    assert not marker.exists()


def test_predict_on_a_received_run_does_not_unpickle_its_checkpoint(tmp_path):
    from _runs import write_run

    marker = tmp_path / "ran"
    run = write_run(tmp_path, "received")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(crafted_torch_bytes(marker, lambda m: {"state": {"model": m}, "log": None}))
    index = {"msp__seed0__fold0": {"method": "msp", "seed": 0, "fold": 0, "key": "evil", "path": str(evil)}}
    (run / "checkpoints.json").write_text(json.dumps(index))
    img = tmp_path / "x.npz"
    import numpy as np

    np.savez(img, images=np.zeros((1, 28, 28), np.uint8))
    with pytest.warns(UserWarning, match="never unpickles"):
        code, _, err = run_main(["predict", "--run", str(run), "--method", "msp", str(img)])
    assert code == 2 and "unreadable" in err
    assert not marker.exists()


def _crafted_export(tmp_path: Path, marker: Path) -> Path:
    """A real torch.export archive whose first weight is marked as pickled and replaced by a crafted pickle: torch's
    loader reads such a weight with full unpickling."""
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Small().eval(), (torch.rand(1, 1, 28, 28),)), str(good))
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as dst:
        config_name = next(n for n in src.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(src.read(config_name))
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        weight_file = config["config"][first]["path_name"]
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename.endswith(f"weights/{weight_file}"):
                data = crafted_torch_bytes(marker)
            dst.writestr(info, data)
    return bad


def test_crafted_export_archive_does_not_run_code(tmp_path):
    from bench.own.model_files import load_model

    marker = tmp_path / "ran"
    bad = _crafted_export(tmp_path, marker)
    with pytest.raises(UsageError, match="never unpickles"):
        load_model(str(bad))
    assert not marker.exists()
    assert load_model(str(tmp_path / "good.pt2")).origin.startswith("torch.export")  # a real archive still loads
    assert torch.load is torch.serialization.load  # the guard puts torch.load back


# --- no user file written over ----------------------------------------------------------------------------------------
@pytest.fixture
def outputs(tmp_path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "out.npz"
    np.savez(path, logits=rng.normal(size=(50, 10)).astype(np.float32), labels=rng.integers(0, 10, 50))
    return path


@pytest.mark.parametrize("name", ["results.csv", "manifest.json", "notes.txt"])
def test_score_out_never_writes_over_a_users_folder(outputs, tmp_path, name):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text("precious")
    code, _, err = run_main(["score", str(outputs), "--out", str(folder)])
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (folder / name).read_text() == "precious" and sorted(os.listdir(folder)) == [name]


def test_uap_sweep_out_never_writes_over_a_users_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "uap_sweep.png").write_text("precious")
    code, _, err = run_main(["uap-sweep", "--methods", "msp", "--linf", "0.1", "--out", str(folder),
                             "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and "not empty" in err
    assert (folder / "uap_sweep.png").read_text() == "precious" and sorted(os.listdir(folder)) == ["uap_sweep.png"]


# --- names are checked before they name files -----------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--method", "../../x"), ("--method", "a/b"), ("--method", ".hidden"),
                                        ("--model-name", "../up"), ("--model-name", "a/b")])
def test_score_names_never_become_paths(outputs, tmp_path, flag, value):
    out = tmp_path / "deep" / "run"
    code, _, err = run_main(["score", str(outputs), flag, value, "--out", str(out)])
    assert code == 2 and "cannot name files" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "deep").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_evaluate_model_names_never_become_paths(name, tmp_path):
    with pytest.raises(UsageError, match="cannot name files"):
        bench.evaluate(Small(), names=[name], methods="msp", datasets="mnist", device="cpu", out=tmp_path / "r",
                       options=FAST)
    assert not (tmp_path / "r").exists()


def test_model_file_stem_is_made_safe(tmp_path):
    from bench.own.model_files import load_model

    path = tmp_path / "my model (v2).pt"
    torch.jit.save(torch.jit.trace(Small().eval(), torch.rand(2, 1, 28, 28)), str(path))
    assert load_model(str(path)).name == "my_model__v2_"


# --- resume -----------------------------------------------------------------------------------------------------------
def test_resume_of_a_model_run_refuses_another_model_under_the_same_name(tmp_path):
    out = tmp_path / "run"
    bench.evaluate(Small(0), names="m", methods="msp", datasets="mnist", device="cpu", out=out, options=FAST)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["user_models"][0]["sha256"]) == 64
    from bench.own.evaluate import prepare, run

    cfg, adapted = prepare(Small(5), names="m", methods="msp", datasets="mnist", device="cpu", options=FAST)
    with pytest.raises(UsageError, match="content hash differs"):
        run(cfg, adapted, out, resume=True)
    cfg, adapted = prepare(Small(0), names="m", methods="msp", datasets="mnist", device="cpu", options=FAST)
    assert run(cfg, adapted, out, resume=True).cells_done == 0  # the same model: nothing to redo


def test_resume_on_a_folder_without_a_run_says_so(tmp_path):
    for target in (tmp_path / "nothing", tmp_path):
        code, _, err = run_main(["run", "--resume", "--out", str(target)])
        assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()


def test_a_wildcard_takes_only_methods_that_can_score_a_brought_model():
    """README's ``--methods 'trust*'`` with --model: trustscore, not trustgan (which trains its own classifier)."""
    from bench.own.evaluate import prepare

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    cfg, adapted = prepare(net, methods="trust*", device="cpu", feature_layer="0")
    assert cfg.methods == ("trustscore",)
    cfg, adapted = prepare(net, methods="*", device="cpu")  # no features, no dropout: the logit scorers
    assert "msp" in cfg.methods and not {"trustscore", "mcdropout", "trustgan", "knn"} & set(cfg.methods)
    with pytest.raises(UsageError, match="trains its own classifier"):
        prepare(net, methods="trustgan", device="cpu")  # a name is refused with the reason


def test_mcdropout_on_a_brought_sequential_runs_its_prefix_once():
    """Issue 35 item 6: an nn.Sequential's layers before its first dropout are its proven deterministic prefix;
    a model without one (or without a declaration) gets one line saying it runs T full passes."""
    import warnings

    from bench.own.evaluate import prepare
    from bench.own.model import UserModel

    seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10)).eval()
    adapted = UserModel(seq, "s")
    x = torch.rand(4, 1, 28, 28)
    assert adapted.stochastic_tail and torch.equal(adapted.forward_tail(adapted.forward_prefix(x)), seq(x))
    nested = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Dropout(0.1)), nn.Linear(784, 10))
    assert not UserModel(nested, "n").stochastic_tail  # a dropout inside a layer: no proven split

    class Plain(nn.Module):  # dropout, but not a Sequential and nothing declared
        def __init__(self):
            super().__init__()
            self.fc, self.drop = nn.Linear(784, 10), nn.Dropout(0.2)

        def forward(self, x):
            return self.fc(self.drop(x.flatten(1)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(Plain(), methods="mcdropout", device="cpu")
        prepare(seq, methods="mcdropout", device="cpu")
    lines = [str(w.message) for w in caught if "full passes" in str(w.message)]
    assert len(lines) == 1 and "model Plain" in lines[0] and "stochastic_tail" in lines[0]
