"""Bayesian methods (issue #34): last-layer Laplace, SWAG and SNGP, each against a direct computation: the explicit
Hessian of the last-layer NLL and the predictive integral by sampling weights (Laplace), moments and the low-rank
covariance of a few hand-made snapshots (SWAG), the precision update and the mean-field adjustment by hand (SNGP)."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.methods.laplace import (
    augmented,
    last_layer_ggn,
    log_marglik_terms,
    logit_covariance,
    optimal_prior_precision,
)
from bench.methods.sngp import SNGPConfig, SNGPModel, mean_field_logits
from bench.methods.swag import SampledNetworks, SWAGMoments, recompute_bn


def toy_last_layer(n: int = 40, f: int = 3, c: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, f, generator=g, dtype=torch.float64)
    w = torch.randn(c, f, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    return phi, w, b, y


# --- laplace --------------------------------------------------------------------------------------------------
def test_laplace_ggn_is_the_explicit_hessian_of_the_last_layer_nll():
    phi, w, b, y = toy_last_layer()
    theta0 = torch.cat([w, b[:, None]], 1).reshape(-1)  # index c * (F+1) + i, the GGN's order

    def nll(theta: torch.Tensor) -> torch.Tensor:
        wb = theta.reshape(4, 4)
        return F.cross_entropy(phi @ wb[:, :3].T + wb[:, 3], y, reduction="sum")

    hessian = torch.autograd.functional.hessian(nll, theta0)
    torch.testing.assert_close(last_layer_ggn(phi, w, b), hessian, rtol=1e-9, atol=1e-9)


def test_laplace_prior_precision_maximises_the_marginal_likelihood():
    phi, w, b, _ = toy_last_layer()
    h = last_layer_ggn(phi, w, b)
    theta = torch.cat([w, b[:, None]], 1).reshape(-1)
    eig = torch.linalg.eigvalsh(h)
    delta = optimal_prior_precision(eig, float(theta @ theta))

    def direct(d: float) -> float:  # -1/2 (log det(H + d I) - D log d + d ||theta||^2), no eigenvalues
        return -0.5 * (float(torch.logdet(h + d * torch.eye(len(h), dtype=h.dtype))) - len(h) * math.log(d)
                       + d * float(theta @ theta))

    grid = torch.logspace(-3, 3, 2001, dtype=torch.float64)
    best = float(grid[torch.tensor([direct(float(d)) for d in grid]).argmax()])
    assert delta == pytest.approx(best, rel=0.01)  # the grid's step is 0.7%
    assert direct(delta) >= max(direct(delta * 1.01), direct(delta / 1.01))
    assert float(log_marglik_terms(eig, float(theta @ theta), torch.tensor(delta))) == pytest.approx(direct(delta))


def test_laplace_logit_covariance_and_predictive_by_sampling_weights():
    phi, w, b, _ = toy_last_layer(n=5)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 16, generator=g, dtype=torch.float64)
    sigma = a @ a.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64)
    x = augmented(phi)
    # J for row n: d f_c / d theta_(c, i) = x_i, zero elsewhere
    jac = torch.zeros(5, 4, 16, dtype=torch.float64)
    for c in range(4):
        jac[:, c, c * 4 : c * 4 + 4] = x
    expected = jac @ sigma @ jac.transpose(1, 2)
    torch.testing.assert_close(logit_covariance(x, sigma, 4, full=True), expected)
    torch.testing.assert_close(logit_covariance(x, sigma, 4, full=False), expected.diagonal(dim1=1, dim2=2))

    # the method's MC predictive (draws of the logits) against draws of the weights themselves
    m = METHODS.get("laplace")(METHODS.get("laplace").Config(link="mc", samples=20000), num_classes=4, seed=0)
    m.state = {"sigma": sigma.float()}
    logits = (x @ torch.cat([w, b[:, None]], 1).T).float()
    mc, _ = m.score_features(phi.float(), logits)
    mean = torch.cat([w, b[:, None]], 1).reshape(-1)
    thetas = torch.distributions.MultivariateNormal(mean, sigma).sample((20000,))  # (S, 16)
    by_weights = (torch.einsum("ni,sci->snc", x, thetas.reshape(-1, 4, 4))).softmax(-1).mean(0)
    torch.testing.assert_close(mc, by_weights.float(), atol=0.01, rtol=0)
    # probit: softmax(z / sqrt(1 + pi/8 var)) with the diagonal of J Sigma J^T
    probit = METHODS.get("laplace")(num_classes=4)
    probit.state = {"sigma": sigma.float()}
    p, conf = probit.score_features(phi.float(), logits)
    want = (logits.double() / torch.sqrt(1 + math.pi / 8 * expected.diagonal(dim1=1, dim2=2))).softmax(1)
    torch.testing.assert_close(p, want.float())
    torch.testing.assert_close(conf, want.max(1).values.float())
    assert (p - by_weights.float()).abs().max() < 0.1  # an approximation of the same integral


def test_laplace_refuses_a_last_layer_beyond_max_params():
    cls = METHODS.get("laplace")
    with pytest.raises(UsageError, match="MLP has 10,010 weights"):  # before any training: 784-1000-10
        cls.preflight(cls.Config(), create_backbone("mlp", 10), 1000)
    assert cls.preflight(cls.Config(), create_backbone("lenet", 10), 1000)["last_layer_params"] == 510
    m = cls(cls.Config(max_params=100), backbone="mlp")
    with pytest.raises(UsageError, match="laplace.max_params"):
        m.fit_features(torch.zeros(4, 50), torch.zeros(4, dtype=torch.long),
                       {"w": torch.zeros(10, 50), "b": torch.zeros(10)})


def test_laplace_on_the_tiny_baseline(tiny, cached_tiny_ctx):
    m = METHODS.get("laplace")(seed=0).fit(tiny[0], tiny[1], cached_tiny_ctx)
    delta = float(m.state["prior_precision"])
    assert 0 < delta < 1e6 and m.train_log.extra["prior_precision"] == [delta]
    pred = m.predict(tiny[2].images)
    msp = METHODS.get("msp")(seed=0).fit(tiny[0], tiny[1], cached_tiny_ctx).predict(tiny[2].images)
    # probit divides each logit by its own sqrt(1 + pi/8 var_c) >= 1: the argmax may move where logits are close
    assert (pred.probs.argmax(1) == msp.probs.argmax(1)).float().mean() > 0.95
    assert pred.confidence.mean() < msp.confidence.mean()  # and the predictive is less confident than the MAP


# --- swag -----------------------------------------------------------------------------------------------------
def test_swag_moments_and_low_rank_covariance_by_hand():
    snaps = [torch.tensor([1.0, 0.0]), torch.tensor([3.0, 2.0]), torch.tensor([2.0, 4.0])]
    m = SWAGMoments(2, rank=2)
    for s in snaps:
        m.collect(s)
    # mean (2, 2); second moment ((1 + 9 + 4) / 3, (0 + 4 + 16) / 3); variance = second moment - mean^2
    torch.testing.assert_close(m.mean, torch.tensor([2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(m.variance(), torch.tensor([14 / 3 - 4, 20 / 3 - 4], dtype=torch.float64))
    # deviations from the running mean *after* each collection, last K = 2 kept: snapshot 2 - (2, 1) = (1, 1),
    # snapshot 3 - (2, 2) = (0, 2)
    torch.testing.assert_close(m.deviations(), torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64))
    # sample covariance: scale (diag(var) + D D^T / (K - 1)); scale 0.5 is the paper's 1/2 (Sigma_diag + Sigma_low)
    d = m.deviations()
    want = 0.5 * (torch.diag(m.variance()) + d @ d.T / 1)
    draws = m.sample(200_000, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), m.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), want, atol=0.02, rtol=0)


def test_swag_sampled_networks_average_the_softmax_of_each_sample():
    base = torch.nn.Linear(2, 3)
    net = SampledNetworks(base, samples=2)
    thetas = torch.randn(2, 9, generator=torch.Generator().manual_seed(0))
    net.thetas.copy_(thetas)
    x = torch.randn(4, 2)
    probs = [(x @ t[:6].view(3, 2).T + t[6:]).softmax(1) for t in thetas]
    torch.testing.assert_close(net(x).exp(), (probs[0] + probs[1]) / 2)


def test_swag_fit_collects_its_snapshots(tiny, cached_tiny_ctx):
    cls = METHODS.get("swag")
    m = cls(cls.Config(rank=3, samples=4, snapshots=5, swa_epochs=1), seed=0).fit(tiny[0], tiny[1], cached_tiny_ctx)
    assert m.train_log.extra["snapshots"][-1] == 5
    assert len(m.train_log.epoch_seconds) == cached_tiny_ctx.recipe.epochs + 1  # the baseline's, then the SWA epoch
    # distinct samples; a weight the SWA phase never moved (a dead unit's) has variance 1e-30 and stays put
    assert m.model.thetas.shape[0] == 4 and (m.model.thetas.std(0) > 0).float().mean() > 0.9
    assert m.forward_passes == 4


def test_swag_is_attacked_through_its_mean_network_and_eot_through_its_samples(tiny, cached_tiny_ctx, tmp_path):
    from bench.datasets import evalsets
    from bench.datasets.evalsets import EvalContext

    cls = METHODS.get("swag")
    m = cls(cls.Config(rank=3, samples=4, swa_epochs=1), seed=0).fit(tiny[0], tiny[1], cached_tiny_ctx)
    x = tiny[2].images[:16].float() / 255
    # classifier: the SWA mean, theta_SWA = the mean of the S samples' distribution (not one of the samples)
    mean = torch.nn.utils.parameters_to_vector(m.classifier.parameters())
    assert m.classifier is m.model.base and not any(torch.equal(mean, t) for t in m.model.thetas)
    # the stored logits stay the predictive's (log of the mean softmax), not the mean network's
    with torch.no_grad():
        torch.testing.assert_close(m.logits(x), m.model.eval()(x))
    # eot_classifier: one of the S samples per pass, drawn from the global RNG
    rand = m.eot_classifier().eval()
    torch.manual_seed(3)
    s = int(torch.randint(4, ()))
    torch.manual_seed(3)
    torch.testing.assert_close(rand(x), m.model.sample_forward(s, x))
    ctx = EvalContext(max_eval=40, cache_dir=tmp_path)
    det, eot = evalsets.build("fgsm:eps=0.2", ctx, m), evalsets.build("fgsm:eps=0.2,eot=4", ctx, m)
    assert eot.extra["eot_samples"] == 4 and not torch.equal(det.images, eot.images)
    assert torch.equal(eot.images, evalsets.build("fgsm:eps=0.2,eot=4", ctx, m).images)  # seeded draws
    # the plain attack is torchattacks' FGSM on the mean network
    import torchattacks

    net = m.classifier.eval()
    want = torchattacks.FGSM(net, eps=0.2)(tiny[2].images[:40].float() / 255, tiny[2].labels[:40])
    assert det.images.dtype == torch.float32  # an attacked set keeps its [0, 1] floats (no uint8 rounding)
    torch.testing.assert_close(det.images, want)


def test_swag_batch_norm_statistics_of_each_sample():
    # recompute_bn: the cumulative average over the given images (one batch here) = the batch's channel means
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    images = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    data = ImageSet(images, torch.zeros(40, dtype=torch.long))
    net.eval()
    recompute_bn(net, data, 30, torch.device("cpu"))
    with torch.no_grad():
        h = net[0](images[:30].float() / 255)
    torch.testing.assert_close(net[1].running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, h.var((0, 2, 3)))  # unbiased, as BatchNorm keeps it
    assert not net.training and net[1].momentum == 0.1  # modes and momentum restored


def test_swag_on_a_batch_norm_network_keeps_statistics_per_sample(tiny):
    train, val, test = tiny
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1))
    cls = METHODS.get("swag")
    m = cls(cls.Config(rank=3, samples=2, swa_epochs=1, bn_images=128), backbone="sn-resnet", seed=0)
    m.fit(train.subset(slice(0, 128)), val.subset(slice(0, 64)), ctx)
    stats = [getattr(m.model, f"stat{i}") for i in range(len(m.model.stat_names))]
    assert stats and all(not torch.equal(s[0], s[1]) for s in stats)  # each sample its own statistics
    # the mean network (the attacks' classifier) has statistics of its own weights too
    mean_net = m.classifier
    want = {n: b.clone() for n, b in mean_net.named_buffers() if n in m.model.stat_names}
    recompute_bn(mean_net, train.subset(slice(0, 128)), 128, torch.device("cpu"))
    for n in m.model.stat_names:
        torch.testing.assert_close(mean_net.get_buffer(n), want[n])
    assert torch.isfinite(m.predict(test.images[:16]).confidence).all()


# --- sngp -----------------------------------------------------------------------------------------------------
def test_sngp_mean_field_by_hand():
    logits = torch.tensor([[2.0, -1.0], [4.0, 0.0]])
    var = torch.tensor([0.0, 8 / math.pi * 3])  # 1 + pi/8 var = 1 and 4
    out = mean_field_logits(logits, var, math.pi / 8)
    torch.testing.assert_close(out, torch.tensor([[2.0, -1.0], [2.0, 0.0]]))


class FeatureNet(torch.nn.Module):
    num_features = 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_sngp_precision_update_and_variance_by_hand():
    torch.manual_seed(0)
    cfg = SNGPConfig(features=3, ridge=2.0, normalize_input=False, kernel_scale=4.0)
    model = SNGPModel(FeatureNet(), 2, cfg)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    phi = model.random_features(x)
    want_phi = torch.cos((x / 2) @ model.rff_w.T + model.rff_b)  # input / sqrt(kernel scale 4)
    assert SNGPModel(FeatureNet(), 2, SNGPConfig(features=3)).kernel_scale == 1.0  # default F / 2
    torch.testing.assert_close(phi, want_phi)
    model.update_precision(phi)
    p = 2 * torch.eye(3, dtype=torch.float64) + phi.double().T @ phi.double()  # ridge I + sum phi phi^T
    torch.testing.assert_close(model.precision, p)
    t = torch.tensor([[1.0, 1.0]])
    pt = model.random_features(t).double()
    var = float(2 * pt @ torch.linalg.inv(p) @ pt.T)  # ridge phi^T P^-1 phi
    model.eval()
    logits = model.beta(pt.float())
    torch.testing.assert_close(model(t), logits / math.sqrt(1 + math.pi / 8 * var))
    model.reset_precision()
    torch.testing.assert_close(model.precision, 2 * torch.eye(3, dtype=torch.float64))


def test_sngp_precision_is_the_last_epochs(tiny, cached_tiny_ctx):
    # every step adds its batch's phi phi^T and an epoch's start resets it: the kept precision's trace is ridge * M
    # plus the sum of ||phi||^2 over one pass (that of the selected epoch), each ||phi||^2 = sum of M cos^2 <= M
    cls = METHODS.get("sngp")
    m = cls(cls.Config(features=64), seed=0).fit(tiny[0], tiny[1], cached_tiny_ctx)
    trace = float(m.model.precision.trace()) - 64
    assert 0 < trace <= 64 * len(tiny[0]) + 1e-3  # cos^2 <= 1 per feature and image, one pass only
    assert trace > 0.25 * 64 * len(tiny[0])  # and not a fraction of a pass (E cos^2 = 1/2)


# --- all three ------------------------------------------------------------------------------------------------
BAYES = ("laplace", "swag", "sngp")
SMALL = {"swag": {"rank": 3, "samples": 3, "swa_epochs": 1}, "sngp": {"features": 64}}


@pytest.mark.parametrize("name", BAYES)
def test_checkpoints_load_weights_only(name, tiny):
    train, val, test = tiny
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1))
    cls = METHODS.get(name)
    m = cls(cls.Config(**SMALL.get(name, {})), seed=0).fit(train.subset(slice(0, 256)), val.subset(slice(0, 64)), ctx)
    buf = io.BytesIO()
    torch.save(m.checkpoint(), buf)
    buf.seek(0)
    clone = cls(cls.Config(**SMALL.get(name, {})), seed=0).load_checkpoint(torch.load(buf, weights_only=True))
    a, b = m.predict(test.images), clone.predict(test.images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)


@pytest.mark.parametrize("name", BAYES)
def test_another_image_shape(name):
    # 3 x 12 x 12 colour images (a user's --data): laplace and swag on the any-shape tinycnn, sngp on sn-resnet
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    images = (torch.rand(96, 3, 12, 12, generator=g) * 60 + labels[:, None, None, None] * 60).to(torch.uint8)
    data = ImageSet(images, labels)
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=32, epochs=1))
    cls = METHODS.get(name)
    m = cls(cls.Config(**SMALL.get(name, {})), backbone="tinycnn", num_classes=3, seed=0, shape=(3, 12, 12))
    pred = m.fit(data.subset(slice(0, 64)), data.subset(slice(64, 96)), ctx).predict(images[:8])
    assert pred.probs.shape == (8, 3) and torch.isfinite(pred.confidence).all()
