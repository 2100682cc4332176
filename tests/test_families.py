"""Single-pass uncertainty methods (issue #34): logitnorm, edl, duq, ddu and the sn-resnet backbone. Losses and
scores against values worked out by hand (or by an independent formula), plus checkpoints that load with
``weights_only=True``."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import TrainingError
from bench.methods import METHODS
from bench.methods.core.base import FitContext
from bench.methods.core.sn_nets import SoftSpectralNorm
from bench.methods.core.training import TrainRecipe
from bench.methods.ddu import class_log_densities, fit_gda
from bench.methods.duq import DUQModel, gradient_penalty
from bench.methods.edl import edl_loss, kl_to_uniform, mse_loss
from bench.methods.logitnorm import logitnorm_loss

FAMILY = ("logitnorm", "edl", "duq", "ddu")


# --- logitnorm ------------------------------------------------------------------------------------------------
def test_logitnorm_loss_by_hand():
    # z = (3, 4): ||z|| = 5, z / (0.5 * 5) = (1.2, 1.6); CE for class 1 = log(1 + e^-0.4)
    z, y = torch.tensor([[3.0, 4.0]]), torch.tensor([1])
    assert logitnorm_loss(z, y, 0.5).item() == pytest.approx(math.log(1 + math.exp(-0.4)), abs=1e-6)
    # the norm no longer matters: scaling the logits leaves the loss as it was
    assert logitnorm_loss(10 * z, y, 0.5).item() == pytest.approx(logitnorm_loss(z, y, 0.5).item(), abs=1e-6)
    assert F.cross_entropy(10 * z, y).item() < F.cross_entropy(z, y).item()  # (plain CE would reward it)


# --- edl ------------------------------------------------------------------------------------------------------
def test_edl_mse_and_kl_by_hand():
    alpha = torch.tensor([[3.0, 1.0]])  # S = 4, p = (0.75, 0.25), variance term p(1-p)/(S+1) = 0.0375 each
    assert mse_loss(alpha, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.125 + 0.075)
    assert mse_loss(alpha, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.125 + 0.075)
    # Dir(3, 1) is Beta(3, 1), density 3x^2: KL to uniform = E[log 3x^2] = log 3 + 2 (digamma 3 - digamma 4)
    assert kl_to_uniform(alpha).item() == pytest.approx(math.log(3) - 2 / 3, abs=1e-6)
    assert kl_to_uniform(torch.ones(1, 10)).item() == pytest.approx(0.0, abs=1e-6)


def test_edl_loss_penalises_only_misleading_evidence():
    z = torch.tensor([[2.0, -1.0]])  # ReLU evidence (2, 0): alpha = (3, 1)
    right, _ = edl_loss(z, torch.tensor([0]), "relu", coef=1.0)  # alpha~ = (1, 1): KL 0
    assert right.item() == pytest.approx(0.2, abs=1e-6)
    wrong, kl = edl_loss(z, torch.tensor([1]), "relu", coef=0.5)  # alpha~ = (3, 1)
    assert kl.item() == pytest.approx(math.log(3) - 2 / 3, abs=1e-6)
    assert wrong.item() == pytest.approx(1.2 + 0.5 * (math.log(3) - 2 / 3), abs=1e-6)


def test_edl_uncertainty_is_higher_on_noise_than_on_mnist(tiny, mnist_train):
    # 4096 images, 2 epochs (128 steps): the tiny fit's 32 steps leave every evidence near 0 (K/S ~ 0.95)
    train, val, test = mnist_train.subset(slice(0, 4096)), mnist_train.subset(slice(4096, 4352)), tiny[2]
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=2))
    m = METHODS.get("edl")(seed=0).fit(train, val, ctx)
    noise = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    u_mnist = 1 - m.predict(test.images).confidence  # default score: confidence = 1 - K/S
    u_noise = 1 - m.predict(noise).confidence
    assert u_noise.mean() > u_mnist.mean() + 0.2, (u_noise.mean(), u_mnist.mean())  # measured 0.96 vs 0.55
    both = METHODS.get("edl")(METHODS.get("edl").Config(score="max_prob"), seed=0)
    both.load_state_dict(m.state_dict())
    pred = both.predict(test.images)
    assert torch.equal(pred.confidence, pred.probs.max(1).values)


# --- duq ------------------------------------------------------------------------------------------------------
class Flat(nn.Module):
    """A stand-in backbone: features = the flattened input."""

    num_features = 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_duq_kernel_and_centroid_update_by_hand():
    net = DUQModel(Flat(), num_classes=2, embedding=2, length_scale=0.5)
    with torch.no_grad():
        net.W.copy_(torch.stack([torch.eye(2), 2 * torch.eye(2)], 1))  # W_0 = I, W_1 = 2I: (E, C, F)
        net.N.fill_(2.0)
        net.m.copy_(torch.tensor([[2.0, 0.0], [0.0, 4.0]]))  # centroids m / N: class 0 (1, 0), class 1 (0, 2)
    x = torch.tensor([[1.0, 1.0]])  # e_0 = (1, 1), e_1 = (2, 2)
    # class 0: ||(0, 1)||^2 / 2 = 0.5; class 1: ||(2, 0)||^2 / 2 = 2; divided by 2 sigma^2 = 0.5
    torch.testing.assert_close(net(x), torch.tensor([[-1.0, -4.0]]))
    net.update_centroids(x, torch.tensor([[0.0, 1.0]]), gamma=0.5)
    torch.testing.assert_close(net.N, torch.tensor([1.0, 1.5]))  # 0.5 * 2 + 0.5 * count
    torch.testing.assert_close(net.m, torch.tensor([[1.0, 1.0], [0.0, 3.0]]))  # 0.5 m + 0.5 * e_1 for class 1


def test_duq_penalty_and_bce_by_hand():
    x = torch.zeros(3, 4, requires_grad=True)
    w = torch.tensor([3.0, 4.0, 0.0, 0.0])  # grad of sum(x @ w) = w per sample: ||w|| = 5
    kernels = (x * w).sum(1, keepdim=True)
    assert gradient_penalty(kernels, x, 1.0, squared=False).item() == pytest.approx(16.0)  # (5 - 1)^2
    assert gradient_penalty(kernels, x, 0.2, squared=False).item() == pytest.approx(0.0)  # scaled to norm 1
    assert gradient_penalty(kernels, x, 1.0, squared=True).item() == pytest.approx(576.0)  # (25 - 1)^2
    x0 = torch.zeros(2, 4, requires_grad=True)
    assert gradient_penalty(x0.sum(1) * 0, x0, 1.0, squared=False).item() == 1.0  # g = 0: (0 - 1)^2, finite


# --- ddu and the sn-resnet backbone -----------------------------------------------------------------------------
def test_gda_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    labels = torch.arange(300) % 3
    feats = feats + labels[:, None].float() * 4
    gda = fit_gda(feats, labels, 3)
    assert gda["jitter"] == 0.0
    ref = torch.distributions.MultivariateNormal(
        torch.stack([feats[labels == c].double().mean(0) for c in range(3)]),
        covariance_matrix=torch.stack([torch.cov(feats[labels == c].double().T) for c in range(3)]))
    z = torch.randn(7, 3, generator=g) * 3
    torch.testing.assert_close(class_log_densities(z, gda["means"], gda["chol"]), ref.log_prob(z.double()[:, None]))


def test_gda_jitters_a_degenerate_feature_and_refuses_a_lone_class():
    feats = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    feats[:, 2] = 0.0  # a dead unit: singular covariances
    gda = fit_gda(feats, torch.arange(40) % 2, 2)
    assert gda["jitter"] > 0 and torch.isfinite(class_log_densities(feats, gda["means"], gda["chol"])).all()
    with pytest.raises(TrainingError, match="class 1 has 1"):
        fit_gda(feats[:3], torch.tensor([0, 1, 0]), 2)


def test_soft_spectral_norm_bounds_the_norm_only_above_coeff():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(16, 8, 3, 3, generator=g) * 3
    p = SoftSpectralNorm(big, coeff=3.0)
    for _ in range(50):  # training mode: power iterations converge
        w = p(big)
    sigma = torch.linalg.matrix_norm(w.reshape(16, -1), ord=2).item()
    assert sigma == pytest.approx(3.0, rel=1e-3)
    small = big / torch.linalg.matrix_norm(big.reshape(16, -1), ord=2) * 0.5  # norm 0.5 < 3: left as it is
    q = SoftSpectralNorm(small, coeff=3.0)
    for _ in range(50):
        out = q(small)
    torch.testing.assert_close(out, small)
    q.eval()
    before = q.u.clone()
    q(small)
    assert torch.equal(q.u, before)  # eval mode: no power iteration, deterministic


def test_score_options_share_one_checkpoint():
    ctx = FitContext()
    for name, other in (("ddu", {"score": "softmax"}), ("edl", {"score": "max_prob"})):
        cls = METHODS.get(name)
        a, b = cls(seed=0), cls(cls.Config(**other), seed=0)
        assert a.cache_key(ctx) == b.cache_key(ctx)
    edl = METHODS.get("edl")
    assert edl(seed=0).cache_key(ctx) != edl(edl.Config(evidence="softplus"), seed=0).cache_key(ctx)


@pytest.mark.parametrize("name", FAMILY)
def test_checkpoints_load_weights_only(name, tiny):
    train, val, test = tiny
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1))
    m = METHODS.get(name)(seed=0).fit(train.subset(slice(0, 256)), val.subset(slice(0, 64)), ctx)
    buf = io.BytesIO()
    torch.save(m.checkpoint(), buf)
    buf.seek(0)
    clone = METHODS.get(name)(seed=0).load_checkpoint(torch.load(buf, weights_only=True))
    a, b = m.predict(test.images), clone.predict(test.images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)
    assert dataclasses.asdict(clone.train_log) == dataclasses.asdict(m.train_log)
