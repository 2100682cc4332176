"""Deep ensemble: mean-probability combination by hand, the seeding scheme, and attacks see one module."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainLog
from bench.methods.ensemble import MeanProbEnsemble


class Fixed(nn.Module):
    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) * x.flatten(1).mean(1, keepdim=True)


def test_log_mean_probability_by_hand():
    # member A: logits (ln 3, 0) -> (3/4, 1/4); member B: (0, 0) -> (1/2, 1/2); mean (5/8, 3/8)
    ens = MeanProbEnsemble([Fixed([math.log(3.0), 0.0]), Fixed([0.0, 0.0])])
    x = torch.ones(2, 1, 28, 28)
    torch.testing.assert_close(ens(x).exp(), torch.tensor([[0.625, 0.375]] * 2))
    x.requires_grad_(True)
    ens(x)[:, 0].sum().backward()  # differentiable end to end, for white-box attacks on the whole ensemble
    assert x.grad is not None and x.grad.abs().sum() > 0


class RecordingContext(FitContext):
    """Hands out untrained backbones seeded by their seed, and records which seeds were asked for."""

    def __init__(self):
        super().__init__()
        self.seeds: list[int] = []

    def train_baseline(self, backbone, num_classes, seed, train, val):
        self.seeds.append(seed)
        torch.manual_seed(seed)
        return create_backbone(backbone, num_classes), TrainLog(epoch_seconds=[1.0, 2.0]), f"baseline-{seed}"


def test_members_are_seeds_s_to_s_plus_m_minus_1(tiny):
    train, val, test = tiny
    ctx = RecordingContext()
    m = METHODS.get("ensemble")(METHODS.get("ensemble").Config(members=3), backbone="lenet", seed=4)
    m.fit(train, val, ctx)
    assert ctx.seeds == [4, 5, 6]
    assert m.forward_passes == 3 and m.train_log.epoch_seconds == [1.0, 2.0] * 3  # cost = sum over members
    x = test.images[:16].float() / 255
    members = list(m.classifier.members)
    with torch.inference_mode():
        mean = torch.stack([mod.eval()(x).softmax(1) for mod in members]).mean(0)
    pred = m.predict(test.images[:16])
    torch.testing.assert_close(pred.probs, mean)
    torch.testing.assert_close(pred.confidence, mean.max(1).values)


def test_single_member_equals_baseline(tiny, tiny_ctx):
    train, val, test = tiny
    ens = METHODS.get("ensemble")(METHODS.get("ensemble").Config(members=1), backbone="lenet", seed=0)
    ens.fit(train, val, tiny_ctx)
    msp = METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)
    torch.testing.assert_close(ens.predict(test.images).probs, msp.predict(test.images).probs)
