"""Distillation: the loss (Hinton et al. 2015, with the T^2 factor), the teacher route through the checkpoint cache
(``FitContext.fit_method``) and the student/teacher report."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from bench.cache import CheckpointCache
from bench.errors import UsageError
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.methods.distill import Distill, DistillConfig, distillation_loss


def test_loss_is_hard_ce_plus_t_squared_soft_kl_by_hand():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t_logp = torch.tensor([[1.0, 1.0, 0.0]]).log_softmax(1)
    y = torch.tensor([0])
    T, lam = 2.0, 0.25
    # by hand: softened distributions at T = 2
    ps = [math.exp(v / T) for v in (2.0, 0.0, -1.0)]
    ps = [v / sum(ps) for v in ps]
    pt = [math.exp(v / T) for v in t_logp[0].tolist()]
    pt = [v / sum(pt) for v in pt]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
    assert kl > 0.01
    expected = lam * ce + (1 - lam) * T * T * kl
    assert distillation_loss(s, t_logp, y, lam, T).item() == pytest.approx(expected, rel=1e-6)


def test_loss_limits():
    torch.manual_seed(0)
    s, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    torch.testing.assert_close(distillation_loss(s, torch.randn(8, 10), y, 1.0, 3.0), F.cross_entropy(s, y))
    # a student that matches the teacher has zero soft loss at any temperature (logits up to a constant)
    assert distillation_loss(s, s.log_softmax(1), y, 0.0, 5.0).item() == pytest.approx(0.0, abs=1e-6)


def test_config_checks():
    for bad in ({"teacher": "distill"}, {"temperature": 0.0}, {"lam": 1.5}):
        with pytest.raises(UsageError, match="distill"):
            DistillConfig(**bad)


def test_teacher_is_fitted_once_through_the_cache_and_reported(tiny, tmp_path, monkeypatch):
    train, val, test = tiny
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=2),
                     cache=CheckpointCache(tmp_path))
    m = Distill(DistillConfig(teacher="msp"), seed=0).fit(train, val, ctx)
    teacher = ctx.fit_method("msp", "lenet", 10, 0, train, val)  # a cache hit now: no training allowed
    assert (tmp_path / f"{teacher.cache_key(ctx)}.pt").exists()

    def no_fit(*args, **kwargs):
        raise AssertionError("the cached teacher was trained again")

    monkeypatch.setattr(type(teacher), "fit", no_fit)
    again = Distill(DistillConfig(teacher="msp"), seed=0).fit(train, val, ctx)
    torch.testing.assert_close(again.predict(test.images).probs, m.predict(test.images).probs)

    r = m.report
    assert r["teacher"] == "msp" and r["teacher_params"] == r["student_params"] == 21840.0
    assert 50 < r["teacher_val_accuracy"] <= 100 and 50 < r["student_val_accuracy"] <= 100
    assert m.train_log.extra["teacher_params"] == [21840.0]
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    clone = Distill(DistillConfig(teacher="msp")).load_state_dict(torch.load(buf, weights_only=True))
    assert clone.report == r


def test_labels_only_reproduces_the_plain_teacher_and_soft_targets_change_it(tiny):
    """lam = 1 is plain cross-entropy: with an msp teacher of the same backbone and seed the student must equal the
    teacher bit for bit (same init, batch order, dropout draws), which pins the loop down; lam = 0 differs."""
    train, val, test = tiny
    train, val = train.subset(slice(0, 256)), val.subset(slice(0, 64))
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1))
    teacher = ctx.fit_method("msp", "lenet", 10, 5, train, val).predict(test.images).probs
    hard = Distill(DistillConfig(teacher="msp", lam=1.0), seed=5).fit(train, val, ctx).predict(test.images).probs
    soft = Distill(DistillConfig(teacher="msp", lam=0.0), seed=5).fit(train, val, ctx).predict(test.images).probs
    assert torch.equal(hard, teacher)
    assert not torch.equal(soft, teacher)
