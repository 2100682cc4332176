"""Bring your own model and outputs from the command line: ``bench run --model`` on a TorchScript export of bench's
own msp lenet reproduces ``bench run --methods msp``; ``bench score`` on a run's saved predictions reproduces its
metrics; bench.score by hand; bad files are one-line errors with exit code 2 and nothing written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
from bench.cli import main
from bench.errors import UsageError

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)

SETS = "mnist,ood:uniform,fgsm:eps=0.1"
SMOKE = ["run", "--profile", "smoke", "--datasets", SETS, "--device", "cpu", "--no-progress",
         "--set", "eval.max_eval=300", "--set", "eval.cost_images=100"]
TIMING = {"infer_ms_per_1k", "gen_seconds", "first_epoch_sec", "sec_per_epoch", "train_sec_total", "epochs",
          "best_epoch", "peak_rss_mb", "peak_gpu_mb"}


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def values(rows: list[dict[str, str]], drop: set[str] = frozenset()) -> dict[tuple[str, str], float]:
    return {(r["eval_set"], r["metric"]): float(r["value"]) for r in rows if r["metric"] not in drop}


@pytest.fixture(scope="module")
def msp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    assert main([*SMOKE, "--methods", "msp", "--out", str(root / "run"), "--cache-dir", str(root / "cache")]) == 0
    return root


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_saved_msp_lenet_gives_the_same_rows_as_bench_run(fmt, msp_run, tmp_path):
    from bench.methods.core.backbones import create_backbone

    entry = json.loads((msp_run / "run" / "checkpoints.json").read_text())["msp__seed0__fold0"]
    lenet = create_backbone("lenet")
    lenet.load_state_dict(torch.load(entry["path"], weights_only=True)["state"]["model"])
    saved = tmp_path / "lenet.pt"
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(lenet.eval()), str(saved))
    else:  # a batch dimension left dynamic, as docs/byom.md says
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(lenet.eval(), (torch.rand(8, 1, 28, 28),),
                                              dynamic_shapes={"x": {0: batch}}), str(saved))
    assert main([*SMOKE, "--methods", "msp", "--model", str(saved), "--out", str(tmp_path / "mine")]) == 0
    theirs, mine = read_rows(msp_run / "run"), read_rows(tmp_path / "mine")
    assert {r["method"] for r in mine} == {"msp@lenet"} and {r["backbone"] for r in mine} == {"lenet"}
    a, b = values(theirs, TIMING), values(mine, TIMING)
    assert set(b) == set(a)  # every metric of every set, FGSM's robust accuracy and the parameter count included
    for key in a:  # bench's lenet evaluates channels-last on a CPU, a saved graph in the default layout: the
        # probabilities differ by ~1e-8, a calibration error in % by ~1e-6 (docs/performance.md)
        assert b[key] == pytest.approx(a[key], abs=1e-5, nan_ok=True), key
    if fmt == "torchscript":  # the run directory goes wherever a bench run's goes: report beside it, the gate
        assert main(["report", str(msp_run / "run"), str(tmp_path / "mine"), "--out", str(tmp_path / "r.csv")]) == 0
        assert {"msp", "msp@lenet"} <= set((tmp_path / "r.csv").read_text().split(","))
        base = str(tmp_path / "base.json")
        assert main(["compare", str(tmp_path / "mine"), "--baseline", base, "--update"]) == 0
        assert main(["compare", str(tmp_path / "mine"), "--baseline", base]) == 0


def test_bench_score_on_a_runs_predictions_gives_its_metrics(msp_run, tmp_path, capsys):
    pred = msp_run / "run" / "predictions"
    out = tmp_path / "scored"
    code = main(["score", str(pred / "msp__seed0__fold0__mnist.npz"), "--name", "mnist",
                 "--ood", f"ood:uniform={pred / 'msp__seed0__fold0__ood_uniform.npz'}", "--out", str(out)])
    assert code == 0 and "Acc" in capsys.readouterr().out
    run = {k: v for k, v in values(read_rows(msp_run / "run")).items() if k[0] in ("mnist", "ood:uniform")}
    assert values(read_rows(out)) == run  # the same functions on the same arrays: equal, not merely close
    from bench.report.runs import load_runs

    assert set(load_runs([out]).rows.eval_set) == {"mnist", "ood:uniform"}


def test_score_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 0])  # predictions 0, 0, 1, 1: correct, wrong, correct, wrong
    ood = np.array([[0.5, 0.5], [0.95, 0.05]])
    df = bench.score(probs, labels, kind="probs", ood={"noise": ood})
    v = {(r.eval_set, r.metric): r.value for r in df.itertuples()}
    assert v[("id", "accuracy")] == pytest.approx(50.0)
    # MCP 0.9, 0.6, 0.7, 0.8; correct {0.9, 0.7} vs wrong {0.6, 0.8}: 3 of 4 pairs ordered
    assert v[("id", "auroc")] == pytest.approx(75.0)
    assert v[("id", "nll")] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.2)) / 4,
                                             rel=1e-6)
    # ID {0.9, 0.6, 0.7, 0.8} vs OOD {0.5, 0.95}: each ID value beats 0.5 only, 4 of 8 pairs
    assert v[("noise", "ood_auroc")] == pytest.approx(50.0)
    # logits give the same softmax; an external confidence replaces the MCP: correct {1, 3} vs wrong {2, 4}
    again = bench.score(torch.tensor(np.log(probs)), torch.tensor(labels))
    assert np.allclose(again.value, df[df.eval_set == "id"].value)
    ext = bench.score(probs, labels, kind="probs", confidence=[1.0, 2.0, 3.0, 4.0])
    assert set(ext.method) == {"confidence"}
    assert float(ext[ext.metric == "auroc"].value.iloc[0]) == pytest.approx(25.0)


@pytest.mark.parametrize("kwargs,msg", [
    ({"labels": [0, 1, 1]}, "labels have shape (3,) but there are 4 outputs"),
    ({"labels": [0, 1, 2, 0]}, "labels must lie in [0, 2)"),
    ({"kind": "probs", "outputs": [[2.0, -1.0]] * 4}, "are not probabilities"),
    ({"outputs": [[1.0, float("nan")]] * 4}, "nan or inf"),
    ({"ood": {"x": [[0.1, 0.2, 0.3]]}}, "OOD set x has 3 classes"),
    ({"confidence": [1, 2, 3, 4], "ood": {"x": [[0.1, 0.2]]}}, "a confidence was given for some sets"),
])
def test_score_bad_input(kwargs, msg):
    args = {"outputs": [[0.1, 0.2]] * 4, "labels": [0, 1, 1, 0], **kwargs}
    with pytest.raises(UsageError) as e:
        bench.score(args.pop("outputs"), args.pop("labels"), **args)
    assert msg in str(e.value) and "\n" not in str(e.value)


NET = '''
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    np.savez(tmp / "nolabels.npz", logits=np.zeros((4, 10)))
    np.savez(tmp / "short.npz", logits=np.zeros((4, 10)), labels=np.zeros(3, dtype=int))
    np.savez(tmp / "outside.npz", logits=np.zeros((4, 10)), labels=np.array([0, 1, 2, 10]))
    (tmp / "text.npz").write_text("not a zip")
    (tmp / "net.py").write_text(NET)
    torch.save({"fc.weight": torch.zeros(10, 784)}, tmp / "partial.pt")
    torch.save({"fc.weight": torch.zeros(5, 784), "fc.bias": torch.zeros(5)}, tmp / "small.pt")
    (tmp / "model.pt").write_text("not a model")
    np.savez(tmp / "arrays.pt", x=np.zeros(3))  # a zip archive, but neither format
    model = ["run", "--profile", "smoke", "--datasets", "mnist", "--device", "cpu", "--no-progress"]
    return [
        (["score", str(tmp / "nolabels.npz")], "has no 'labels' array"),
        (["score", str(tmp / "short.npz")], "labels have shape (3,) but there are 4 outputs"),
        (["score", str(tmp / "outside.npz")], "labels must lie in [0, 10)"),
        (["score", str(tmp / "text.npz")], "is not a readable .npz"),
        (["score", str(tmp / "short.npz"), "--ood", "x"], "--ood 'x' is malformed"),
        ([*model, "--model", str(tmp / "model.pt")], "is not a TorchScript file or a torch.export archive"),
        ([*model, "--model", str(tmp / "missing.pt")], "does not exist"),
        ([*model, "--model", str(tmp / "arrays.pt.npz")], "loads neither as TorchScript"),
        ([*model, "--model", f"{tmp / 'net.py'}:Nett"], "has no class or factory 'Nett' (its nn.Module classes: Net)"),
        ([*model, "--model", f"{tmp / 'net.py'}:Net", "--weights", str(tmp / "partial.pt")], "missing fc.bias"),
        ([*model, "--model", f"{tmp / 'net.py'}:Net", "--weights", str(tmp / "small.pt")], "size mismatch"),
        ([*model, "--model", f"{tmp / 'net.py'}:Net", "--backbone", "mlp"], "--backbone and --model"),
        ([*model, "--weights", str(tmp / "small.pt")], "go with --model PATH"),
        ([*model, "--model", f"{tmp / 'net.py'}:Net", "--methods", "oodgan"], "oodgan trains its own classifier"),
    ]


def test_bad_files_are_one_line_errors_and_nothing_is_written(tmp_path, capsys):
    for args, msg in _bad_cases(tmp_path):
        out = tmp_path / "out"
        assert main([*args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert not out.exists(), args


def test_python_model_with_weights_runs(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(10, 784) * 0.01, "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "mine.pt")
    assert main(["run", "--profile", "smoke", "--datasets", "mnist", "--device", "cpu", "--no-progress",
                 "--set", "eval.max_eval=100", "--model", f"{tmp_path / 'net.py'}:Net", "--weights",
                 str(tmp_path / "mine.pt"), "--methods", "msp,energy", "--out", str(tmp_path / "run")]) == 0
    rows = read_rows(tmp_path / "run")
    assert {r["method"] for r in rows} == {"msp@mine", "energy@mine"}
    # the loaded weights are the ones scored: accuracy recomputed from them
    from bench.datasets.mnist import load_embedded

    test = load_embedded("mnist", "test").subset(slice(0, 100))
    logits = (test.images.float() / 255.0).flatten(1) @ state["fc.weight"].T + state["fc.bias"]
    acc = 100.0 * float((logits.argmax(1) == test.labels).float().mean())
    got = [float(r["value"]) for r in rows if r["method"] == "msp@mine" and r["metric"] == "accuracy"]
    assert got == [pytest.approx(acc)]
