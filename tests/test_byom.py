"""Bring your own model: bench.evaluate on models defined here, the adapter's feature sources, the model left as
found, and the one-line refusals (bench/own/evaluate.py, bench/own/model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import bench
from bench.datasets.mnist import load_embedded
from bench.errors import UsageError
from bench.own.model import UserModel
from bench.run.store import ROW_FIELDS

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


# tiny slices: 200 test images per set, 600 training images (540 train / 60 val)
FAST = {"eval.max_eval": 200, "split.max_train": 600, "eval.cost_images": 100, "mcdropout.passes": 3,
        "confidnet.head_epochs": 1}


class Net(nn.Module):
    """A small MLP with dropout, written the way a user would (no bench conventions)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.body(x)))


class Plain(nn.Module):
    """No dropout, no features: only post-hoc scorers apply."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def trained() -> Net:
    """Net after one epoch of Adam on 2k images: well above chance, so the metrics mean something."""
    data = load_embedded("mnist", "train").subset(slice(0, 2000))
    x, y = data.images.float() / 255.0, data.labels
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net


def _value(df, method: str, eval_set: str, metric: str) -> float:
    sel = df[(df.method == method) & (df.eval_set == eval_set) & (df.metric == metric)]
    assert len(sel) == 1, (method, eval_set, metric, len(sel))
    return float(sel.value.iloc[0])


def test_evaluate_a_model_defined_here_gives_the_run_rows_and_leaves_it_as_found(trained):
    trained.train()  # a user's model in train mode, one parameter frozen: both must come back so
    trained.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    df = bench.evaluate(trained, methods=["msp", "energy", "mcdropout", "trustscore", "confidnet"],
                        datasets=["mnist", "ood:uniform"], device="cpu", feature_layer="body", options=FAST)
    assert list(df.columns) == list(ROW_FIELDS)
    assert set(df.method) == {f"{m}@Net" for m in ("msp", "energy", "mcdropout", "trustscore", "confidnet")}
    assert set(df.backbone) == {"Net"} and set(df.eval_set) == {"mnist", "ood:uniform", "cost"}
    # accuracy and the MSP's misclassification AUROC recomputed here from the model's own outputs
    test = load_embedded("mnist", "test").subset(slice(0, 200))
    trained.eval()
    with torch.no_grad():
        probs = trained(test.images.float() / 255.0).softmax(1).numpy()
    trained.train()
    correct = probs.argmax(1) == test.labels.numpy()
    assert _value(df, "msp@Net", "mnist", "accuracy") == pytest.approx(100 * correct.mean(), abs=1e-9)
    assert _value(df, "msp@Net", "mnist", "auroc") == pytest.approx(
        100 * roc_auc_score(correct, probs.max(1)), abs=1e-4)
    assert _value(df, "msp@Net", "mnist", "accuracy") > 60
    assert _value(df, "msp@Net", "cost", "params") == sum(p.numel() for p in trained.parameters())
    assert _value(df, "mcdropout@Net", "cost", "forward_passes") == 3
    # the model is as it was: parameters and buffers, modes, requires_grad, no hook left behind
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in trained.modules())
    assert not trained.fc.bias.requires_grad and trained.fc.weight.requires_grad
    assert not trained.body._forward_hooks
    trained.fc.bias.requires_grad_(True)


def test_out_writes_a_run_directory_that_report_reads(trained, tmp_path):
    from bench.report.runs import load_runs

    bench.evaluate(trained, methods="msp", datasets=["mnist"], device="cpu", out=tmp_path / "mine", options=FAST)
    runs = load_runs([tmp_path / "mine"])  # complete: the manifest lists the labelled cells
    assert set(runs.rows.method) == {"msp@Net"}
    assert (tmp_path / "mine" / "predictions" / "msp@Net__seed0__fold0__mnist.npz").exists()


def test_several_models_and_their_ensemble(trained):
    df = bench.evaluate([trained, Net(seed=3)], names=["a", "b"], methods=["msp", "ensemble"], datasets=["mnist"],
                        device="cpu", options=FAST)
    assert set(df.method) == {"msp@a", "msp@b", "ensemble@a+b"}
    # the ensemble's probabilities are the mean of the members' softmaxes: its NLL is checked against that
    test = load_embedded("mnist", "test").subset(slice(0, 200))
    x = test.images.float() / 255.0
    b = Net(seed=3)
    with torch.no_grad():
        trained.eval()
        mean = (trained(x).softmax(1) + b.eval()(x).softmax(1)) / 2
        trained.train()
    nll = -np.log(mean.numpy()[np.arange(200), test.labels.numpy()]).mean()
    assert _value(df, "ensemble@a+b", "mnist", "nll") == pytest.approx(nll, rel=1e-4)


def test_feature_sources():
    x = torch.rand(4, 1, 28, 28)
    hooked = UserModel(Net(), "n", feature_layer="body")
    hooked.probe(x, 10)
    assert hooked.source == "layer" and hooked.num_features == 32 and not hooked.feature_problem
    hooked.close()
    none = UserModel(Plain(), "p")
    none.probe(x, 10)
    assert "feature_layer" in none.feature_problem and none.num_features == 0
    import timm

    t = UserModel(timm.create_model("resnet10t", num_classes=10, in_chans=1), "r")
    t.probe(x, 10)
    assert t.source == "timm" and t.num_features == t.model.num_features and not t.feature_problem
    from bench.methods.core.backbones import create_backbone

    own = UserModel(create_backbone("lenet"), "lenet")  # bench's own convention
    own.probe(x, 10)
    assert own.source == "bench" and own.num_features == 50


class Wrong(nn.Module):
    """forward_features/forward_head that do not compose to forward: not taken as features."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f) + 1.0


class Out(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("model,kwargs,msg", [
    (Net(), {"methods": "trustgan"}, "trustgan trains its own classifier"),
    (Net(), {"methods": "distill"}, "distill trains its own classifier"),
    (Plain(), {"methods": "mcdropout"}, "mcdropout needs dropout layers"),
    (Plain(), {"methods": "trustscore"}, "trustscore needs penultimate features"),
    (Wrong(), {"methods": "confidnet"}, "differs from model(x)"),
    (Net(), {"methods": "ensemble"}, "ensemble needs several models"),
    (Net(), {"feature_layer": "bdy"}, "did you mean body"),
    (Net(), {"data": "cifar10"}, "use 'mnist' or your own labelled dataset as 'NAME=PATH'"),
    (Out(lambda x: x.flatten(1)[:, :10].unsqueeze(0)), {}, "must return logits of shape (N, K)"),
    (Out(lambda x: x.flatten(1)[:, :10] / 0.0), {}, "non-finite logits"),
    (Out(lambda x: x.flatten(1)[:, :7]), {}, "7 logits per image but mnist has 10 classes"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)), {}, "expects 3-channel images"),
    ("not a model", {}, "not a torch.nn.Module"),
])
def test_bad_input_is_refused_in_one_line_before_any_work(model, kwargs, msg, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UsageError) as e:
        bench.evaluate(model, **{"datasets": ["mnist"], "device": "cpu", "out": out, **kwargs})
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()  # nothing half written
    if isinstance(model, nn.Module):
        assert not any(m._forward_hooks for m in model.modules())


def test_import_bench_stays_light():
    import subprocess
    import sys

    code = "import bench, sys; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_readme_example_runs():
    """The README's "Bring your own model" Python block runs as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 1
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code[0], "README", "exec"), {})
    assert "msp@Sequential" in printed.getvalue() and "ood_auroc" in printed.getvalue()
