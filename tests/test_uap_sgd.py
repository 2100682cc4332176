"""The stochastic-gradient universal perturbation (uap:algo=sgd): hand-checked steps, the ball, the cache keys that
keep it apart from DeepFool's, and the one-line errors for bad parameters (before any training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.uap import cache_key, model_hash, parse
from bench.datasets.uap_sgd import sgd_perturbation
from bench.errors import UsageError
from bench.methods import METHODS
from bench.utils import stable_hash


class SumNet(nn.Module):
    """Two classes, logits (s, -s) with s = mean pixel - 0.49: a grey 0.5 image is (barely) class 0, and the
    cross-entropy of class 0 rises when any pixel falls, so the loss gradient w.r.t. v is negative and equal at every
    pixel (for images that stay inside [0, 1] after the step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1, keepdim=True) - 0.49
        return torch.cat([s, -s], 1)


@pytest.fixture(scope="module")
def msp(tiny, tiny_ctx):
    train, val, _ = tiny
    return METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)


def test_one_step_is_a_signed_or_normalised_gradient_step_by_hand():
    x = torch.full((4, 1, 28, 28), 0.5)  # class 0, and x + v stays in [0, 1]
    clean = torch.zeros(4, dtype=torch.long)
    # L-inf: one pass, one batch, first step lr * xi = 0.5 * 0.1 = 0.05 against the gradient's sign (all -1)
    v, stats = sgd_perturbation(SumNet(), x, clean, 0.1, "inf", passes=1, batch_size=4, lr=0.5)
    assert torch.allclose(v, torch.full_like(v, -0.05))
    assert stats["uap_passes"] == 1 and stats["uap_norm"] == pytest.approx(0.05)
    # L2: the same step length 0.5 * xi = 1.0 along the unit gradient, whose 784 entries are equal: -1/28 each
    v, _ = sgd_perturbation(SumNet(), x, clean, 2.0, "2", passes=1, batch_size=4, lr=0.5)
    assert torch.allclose(v, torch.full_like(v, -1 / 28))
    # a step past the ball is projected back: L-inf clips to xi, L2 rescales to xi
    v, _ = sgd_perturbation(SumNet(), x, clean, 0.1, "inf", passes=1, batch_size=1, lr=0.5)  # 4 steps of 0.05
    assert torch.allclose(v, torch.full_like(v, -0.1))
    v, _ = sgd_perturbation(SumNet(), x, clean, 0.5, "2", passes=1, batch_size=1, lr=0.5)  # 4 steps of 0.25
    assert float(v.norm()) == pytest.approx(0.5, rel=1e-5)


def test_ball_fooling_rate_and_early_stop(msp, mnist_train):
    model = msp.classifier.eval()
    x = mnist_train.images[:200].float() / 255
    with torch.no_grad():
        clean = model(x).argmax(1)
    for xi, p in ((0.3, "inf"), (5.0, "2")):
        v, stats = sgd_perturbation(model, x, clean, xi, p, passes=3, batch_size=20, seed=1)
        norm = float(v.abs().max()) if p == "inf" else float(v.norm())
        assert v.shape == (1, 1, 28, 28) and norm <= xi * (1 + 1e-5)
        with torch.no_grad():
            fooled = 100 * float((model((x + v).clamp(0, 1)).argmax(1) != clean).float().mean())
        assert stats["uap_train_fooling_rate"] == pytest.approx(fooled, abs=1e-4) and fooled > 10
    _, stats = sgd_perturbation(model, x, clean, 0.5, "inf", passes=5, delta=0.95)
    assert stats["uap_train_fooling_rate"] >= 5 and stats["uap_passes"] == 1  # reached 1 - delta after pass 1


def test_deepfool_keeps_its_old_cache_key_and_never_meets_sgd(msp, tmp_path):
    # the key before algo= existed, computed from its definition: parameters without any algo entry
    old = stable_hash({"model": model_hash(msp.classifier), "seed": 2017, "version": 1,
                       "uap": {"xi": 0.3, "p": "inf", "n": 20, "passes": 1, "budget": 120.0, "delta": 0.2}})
    assert cache_key(model_hash(msp.classifier), parse("xi=0.3,p=inf,n=20,passes=1,algo=deepfool")) == old
    sgd = cache_key(model_hash(msp.classifier), parse("xi=0.3,p=inf,n=20,passes=1"))
    assert sgd != old and parse("xi=0.3,p=inf")["algo"] == "sgd"  # sgd is the default
    # a perturbation cached by deepfool under the old key is found by deepfool, not by sgd
    (tmp_path / "uap").mkdir()
    planted = torch.full((1, 1, 28, 28), 0.3)
    torch.save({"v": planted, "stats": {"gen_seconds": 1.0}}, tmp_path / "uap" / f"{old}.pt")
    ctx = EvalContext(max_eval=10, cache_dir=tmp_path)
    x = evalsets.build("mnist", ctx).images.float() / 255
    df = evalsets.build("uap:xi=0.3,p=inf,n=20,passes=1,algo=deepfool", ctx, msp)
    assert torch.equal(df.images, (x + 0.3).clamp(0, 1))
    sg = evalsets.build("uap:xi=0.3,p=inf,n=20,passes=1", ctx, msp)
    assert not torch.equal(sg.images, df.images) and (tmp_path / "uap" / f"{sgd}.pt").exists()


@pytest.mark.parametrize("bad, msg", [
    ("uap:xi=0.2,p=inf,algo=pgd", "unknown algo='pgd'"),
    ("uap:xi=1.5,p=inf", "xi=1.5 is outside (0, 1] for p=inf"),
    ("uap:xi=30,p=2", "xi=30 is outside (0, 28] for p=2"),
    ("uap:xi=0.2,p=inf,algo=deepfool,lr=0.1", "lr= applies to algo=sgd only"),
    ("uap:xi=0.2,p=inf,batch=0", "batch must be >= 1"),
])
def test_bad_parameters_are_refused_at_expansion(bad, msg):
    with pytest.raises(UsageError, match=None) as e:
        evalsets.expand([bad])
    assert msg in str(e.value)


def test_cli_refuses_a_bad_radius_before_training(tmp_path, capsys):
    code = main(["run", "--profile", "smoke", "--methods", "msp", "--datasets", "mnist,uap:xi=2,p=inf",
                 "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "xi=2 is outside (0, 1] for p=inf" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()  # nothing was trained


@pytest.mark.parametrize("args, msg", [
    (["--algos", "sgd,fgsm"], "--algos: unknown algo 'fgsm'"),
    (["--linf", "0.1,1.5"], "xi=1.5 is outside (0, 1] for p=inf"),
    (["--linf", "", "--l2", ""], "no radius given"),
])
def test_uap_sweep_refuses_bad_input_before_training(args, msg, tmp_path, capsys):
    code = main(["uap-sweep", *args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()
