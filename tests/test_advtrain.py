"""Adversarial training: the training-time attacks (methods/core/attacks.py) and the advtrain loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.methods.advtrain import AdvTrain, AdvTrainConfig
from bench.methods.core.attacks import ATTACKS, input_grad, perturb
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe


@pytest.fixture()
def small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    return model, x, y


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_stay_in_the_eps_ball_and_pixel_range_and_leave_no_param_grads(small, attack):
    model, x, y = small
    adv = perturb(model, x, y, attack, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > 0.05  # it moved
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_is_the_signed_gradient_step(small):
    model, x, y = small
    x = x * 0.5 + 0.25  # away from the box so clipping does not hide the step
    g = input_grad(model, x, y)
    assert g.abs().min() > 0
    torch.testing.assert_close(perturb(model, x, y, "fgsm", eps=0.05), x + 0.05 * g.sign())


def test_input_grad_is_per_sample_and_batch_size_free(small):
    model, x, y = small
    full = input_grad(model, x, y)
    torch.testing.assert_close(full[3:4], input_grad(model, x[3:4], y[3:4]))


def test_pgd_raises_the_loss_more_than_the_random_start(small):
    model, x, y = small
    gen = torch.Generator().manual_seed(1)

    def loss(z: torch.Tensor) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(z), y))

    pgd = perturb(model, x, y, "pgd", eps=0.1, steps=10, generator=gen)
    noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.1).clamp(0, 1)
    assert loss(pgd) > loss(noise) > 0
    assert loss(pgd) > loss(x)


def test_eps_ramp_and_config_checks():
    cfg = AdvTrainConfig(eps=0.3, eps_warmup=2)
    assert cfg.eps_at(0.5) == pytest.approx(0.075) and cfg.eps_at(2) == pytest.approx(0.3)
    assert cfg.eps_at(5) == pytest.approx(0.3)
    assert AdvTrainConfig(eps_warmup=0).eps_at(0.01) == pytest.approx(0.3)
    for bad in ({"attack": "cw"}, {"eps": 1.5}, {"steps": 0}, {"clean_weight": 1.0}, {"eps_warmup": -1},
                {"step_size": -0.1}):
        with pytest.raises(UsageError, match="advtrain"):
            AdvTrainConfig(**bad)


def test_eps_zero_is_exactly_plain_training(tiny):
    """With eps = 0 the adversarial batch is the clean batch: the loop must reproduce the cached baseline bit for
    bit (same init, batch order and dropout draws), which pins the loop down; any other eps changes the weights."""
    train, val, _ = tiny
    train, val = train.subset(slice(0, 256)), val.subset(slice(0, 64))
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1))
    base, _, _ = ctx.train_baseline("lenet", 10, 3, train, val)
    plain = AdvTrain(AdvTrainConfig(eps=0.0), seed=3).fit(train, val, ctx)
    adv = AdvTrain(AdvTrainConfig(attack="fgsm_rs", eps=0.3, eps_warmup=0), seed=3).fit(train, val, ctx)
    for (k, a), b, c in zip(base.state_dict().items(), plain.model.state_dict().values(),
                            adv.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, c) for a, c in zip(base.state_dict().values(), adv.model.state_dict().values()))
    assert adv.train_log.extra["eps_end"] == [pytest.approx(0.3)]
