"""FGSM / PGD / FGSM-transfer sets: equal to a direct torchattacks call, bounded, reproducible, mode-safe."""

from __future__ import annotations

import pytest
import torch
import torchattacks

from bench.datasets import evalsets
from bench.datasets.adversarial import run_attack
from bench.datasets.evalsets import EvalContext
from bench.errors import UsageError
from bench.methods import METHODS

N = 200


@pytest.fixture(scope="module")
def msp(tiny, tiny_ctx):
    train, val, _ = tiny
    return METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)


@pytest.fixture(scope="module")
def clean(mnist_test):
    return mnist_test.images[:N].float() / 255, mnist_test.labels[:N]


def test_fgsm_set_equals_a_direct_torchattacks_call(msp, clean):
    x, y = clean
    data = evalsets.build("fgsm:eps=0.1", EvalContext(max_eval=N), msp)
    model = msp.classifier.eval()
    direct = torchattacks.FGSM(model, eps=0.1)(x, y)
    torch.testing.assert_close(data.images, direct, rtol=0, atol=1e-6)
    with torch.no_grad():
        robust = 100 * float((model(direct).argmax(1) == y).float().mean())
    assert data.extra["robust_accuracy"] == pytest.approx(robust)
    assert (data.kind, data.shift, data.severity) == ("id", "fgsm", "0.1")
    assert torch.equal(data.labels, y)


def test_fgsm_matches_the_formula_and_is_bounded(msp, clean):
    x, y = clean
    data = evalsets.build("fgsm:eps=0.3", EvalContext(max_eval=N), msp)
    model = msp.classifier.eval()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)
    torch.testing.assert_close(data.images, (x + 0.3 * g.sign()).clamp(0, 1), rtol=0, atol=1e-6)
    assert (data.images - x).abs().max() <= 0.3 + 1e-6 and data.images.min() >= 0 and data.images.max() <= 1
    assert data.extra["robust_accuracy"] < data.extra["clean_accuracy"]
    assert data.extra["gen_seconds"] > 0


def test_attack_restores_train_mode(msp):
    msp.classifier.train()
    try:
        evalsets.build("fgsm:eps=0.05", EvalContext(max_eval=16), msp)
        assert all(m.training for m in msp.classifier.modules())
    finally:
        msp.classifier.eval()


def test_stochastic_methods_are_attacked_through_their_deterministic_classifier(msp):
    mcd = METHODS.get("mcdropout")(backbone="lenet", seed=0).load_state_dict(msp.state_dict())  # same baseline
    a = evalsets.build("fgsm:eps=0.1", EvalContext(max_eval=64), mcd)
    b = evalsets.build("fgsm:eps=0.1", EvalContext(max_eval=64), msp)
    assert torch.equal(a.images, b.images)  # same baseline, dropout off during the attack


def test_pgd_is_bounded_reproducible_and_at_least_as_strong(msp, clean):
    x, _ = clean
    ctx = EvalContext(max_eval=100)
    x = x[:100]
    a = evalsets.build("pgd:eps=0.3,steps=10", ctx, msp)
    b = evalsets.build("pgd:eps=0.3,steps=10", ctx, msp)
    assert torch.equal(a.images, b.images)
    assert (a.images - x).abs().max() <= 0.3 + 1e-6
    f = evalsets.build("fgsm:eps=0.3", ctx, msp)
    assert a.extra["robust_accuracy"] <= f.extra["robust_accuracy"] + 2.0


def test_transfer_set_uses_the_fixed_source_not_the_method(msp, clean):
    x, y = clean
    ctx = EvalContext(max_eval=N)
    ctx._cache[("source", "lenet")] = msp.classifier.eval()  # stands in for the trained source (slow to train)
    data = evalsets.build("fgsm-transfer:eps=0.2", ctx)
    assert not evalsets.needs_model("fgsm-transfer:eps=0.2")
    torch.testing.assert_close(data.images, torchattacks.FGSM(msp.classifier, eps=0.2)(x, y), rtol=0, atol=1e-6)
    assert set(data.extra) == {"source_gen_seconds", "source_clean_accuracy", "source_robust_accuracy"}


def test_family_defaults_and_bad_parameters():
    assert evalsets.expand(["fgsm"]) == ["fgsm:eps=0.05", "fgsm:eps=0.1", "fgsm:eps=0.2", "fgsm:eps=0.3"]
    for bad in ("fgsm:eps=2", "fgsm:epsilon=0.1", "fgsm:eps=abc", "pgd:eps=0.1,steps=0"):
        with pytest.raises(UsageError):
            evalsets.build(bad, EvalContext(max_eval=4), object())


def test_run_attack_batches_agree_with_one_batch(msp, clean):
    x, y = clean
    atk = torchattacks.FGSM(msp.classifier, eps=0.1)
    a, _ = run_attack(atk, msp.classifier, x, y, torch.device("cpu"), batch_size=37)
    b, _ = run_attack(atk, msp.classifier, x, y, torch.device("cpu"), batch_size=N)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_run_end_to_end_rows_carry_shift_severity_and_extra_rows(tmp_path, monkeypatch):
    import csv

    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    before = evalsets.EVAL_SETS.names()  # --ood sets live in the run's own registry, never the global one
    folder = tmp_path / "blobs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 200, 10)).save(folder / f"{i}.png")
    code = main(["run", "--profile", "smoke", "--methods", "msp", "--no-progress", "--set", "eval.max_eval=100",
                 "--set", "split.max_train=500", "--datasets",
                 "mnist,pmnist:triple,fgsm:eps=0.1,uap:xi=4,p=2,n=20,passes=1,fooling:n=20,steps=5",
                 "--ood", f"blobs={folder}", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    got = {(r["eval_set"], r["shift"], r["severity"]) for r in rows}
    assert {("pmnist:triple", "pmnist", "triple"), ("fgsm:eps=0.1", "fgsm", "0.1"),
            ("uap:xi=4,p=2,n=20,passes=1", "uap", "2:4"), ("ood:blobs", "ood", "")} <= got
    metrics = {(r["eval_set"], r["metric"]) for r in rows}
    assert {("fgsm:eps=0.1", "gen_seconds"), ("fgsm:eps=0.1", "robust_accuracy"),
            ("uap:xi=4,p=2,n=20,passes=1", "uap_fooling_rate"), ("fooling:n=20,steps=5", "ood_auroc"),
            ("fooling:n=20,steps=5", "fooling_target_prob"), ("ood:blobs", "ood_auroc")} <= metrics
    assert evalsets.EVAL_SETS.names() == before
