"""CURE: the penalty's value, its direction z, and its exact double-backprop gradient (finite-difference check)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import UsageError
from bench.methods.core.attacks import input_grad
from bench.methods.cure import CureConfig, curvature_direction, curvature_penalty


def smooth_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 6, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 2])


def test_direction_is_the_normalised_gradient_sign(batch):
    net, (x, y) = smooth_net(), batch
    z = curvature_direction(net, x, y)
    g = input_grad(net, x, y)
    assert (g != 0).all()
    torch.testing.assert_close(z, g.sign() / 6 ** 0.5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4, dtype=torch.float64))


def test_penalty_is_the_squared_gradient_difference(batch):
    net, (x, y) = smooth_net(), batch
    h = 0.7
    z = curvature_direction(net, x, y)
    expected = (input_grad(net, x + h * z, y) - input_grad(net, x, y)).pow(2).sum(1)
    got = curvature_penalty(net, x, y, h)
    torch.testing.assert_close(got, expected)
    assert (got > 0).all()


def test_penalty_gradient_matches_finite_differences(batch):
    """d/dtheta of sum_i ||grad_x l(x_i + h z_i) - grad_x l(x_i)||^2 by double backprop (z held fixed) equals
    central differences of the penalty in every parameter (float64, smooth net)."""
    net, (x, y) = smooth_net(), batch
    h = 0.5
    z = curvature_direction(net, x, y)

    def value() -> torch.Tensor:
        return curvature_penalty(net, x, y, h, z=z).sum()

    grads = torch.autograd.grad(value(), list(net.parameters()))
    step = 1e-6
    for p, g in zip(net.parameters(), grads):
        fd = torch.zeros_like(p)
        flat = p.data.view(-1)  # nudge the weights in place, outside autograd
        for i in range(p.numel()):
            keep = flat[i].item()
            flat[i] = keep + step
            up = value().item()
            flat[i] = keep - step
            down = value().item()
            flat[i] = keep
            fd.view(-1)[i] = (up - down) / (2 * step)
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-8)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_penalty_vanishes_for_a_loss_linear_in_x():
    """If grad_x l does not depend on x (a one-sample 'loss' that is linear in x through a frozen softmax), the
    curvature penalty is zero; for a curved loss it is not."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 3, bias=False).double()
    x = torch.rand(1, 6, dtype=torch.float64)
    # cross-entropy of a linear model is curved in x: positive penalty
    assert curvature_penalty(lin, x, torch.tensor([1]), 1.0).item() > 0
    with torch.no_grad():
        lin.weight.zero_()  # constant logits: grad_x l = 0 everywhere
    assert curvature_penalty(lin, x, torch.tensor([1]), 1.0).item() == 0


def test_h_schedule_and_config_checks():
    cfg = CureConfig(h=(0.1, 0.4, 3.0))
    assert [cfg.h_at(e) for e in (1, 2, 3, 4, 10)] == [0.1, 0.4, 3.0, 3.0, 3.0]
    for bad in ({"lam": -1.0}, {"h": ()}, {"h": (0.1, 0.0)}):
        with pytest.raises(UsageError, match="cure"):
            CureConfig(**bad)


def test_cure_lowers_curvature_against_plain_training(tiny):
    """Same init, data and budget: training with the penalty ends with a smaller measured curvature on held-out
    images than lam = 0 (plain cross-entropy)."""
    from bench.datasets.mnist import to_float
    from bench.methods.core.base import FitContext
    from bench.methods.core.training import TrainRecipe
    from bench.methods.cure import Cure

    train, val, test = tiny
    train = train.subset(slice(0, 256))
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=2))
    x, y = to_float(test.images[:128]), test.labels[:128]

    def curvature(lam: float) -> float:
        m = Cure(CureConfig(lam=lam, h=(1.0,)), seed=0).fit(train, val, ctx)
        return float(curvature_penalty(m.model.eval(), x, y, 1.0).mean().detach())

    assert curvature(40.0) < curvature(0.0)
