"""OOD-GAN (confident classifier) mechanics: the KL-to-uniform term, the 28x28 DCGAN, config checks, a tiny fit."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.methods.oodgan import OODGAN, OODGANConfig, build_discriminator, build_generator, kl_to_uniform


def test_kl_to_uniform_by_hand():
    # sample 1: p = softmax([0, ln 3]) = (1/4, 3/4); KL(U||p) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3)
    # sample 2: uniform logits, KL = 0. Batch mean = ln(4/3) / 4.
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]])
    assert torch.allclose(logits[0].softmax(0), torch.tensor([0.25, 0.75]))
    assert kl_to_uniform(logits).item() == pytest.approx(math.log(4 / 3) / 4, abs=1e-6)
    # the reference's form: F.kl_div(log_softmax, uniform) averaged over all N*C elements, times C
    c = 10
    logits = torch.randn(7, c, generator=torch.Generator().manual_seed(0)) * 3
    ref = F.kl_div(F.log_softmax(logits, 1), torch.full((7, c), 1 / c), reduction="sum") / (7 * c) * c
    assert kl_to_uniform(logits).item() == pytest.approx(ref.item(), rel=1e-5)
    assert kl_to_uniform(torch.zeros(3, c)).item() == pytest.approx(0.0, abs=1e-6)


def test_dcgan_shapes_and_ranges():
    torch.manual_seed(0)
    g, d = build_generator(nz=100, ngf=8), build_discriminator(ndf=8)
    fake = g(torch.randn(5, 100, 1, 1))
    assert fake.shape == (5, 1, 28, 28) and fake.min() >= 0 and fake.max() <= 1
    out = d(fake)
    assert out.shape == (5,) and ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("key,value", [("beta", -1.0), ("lr", 0.0), ("nz", 0), ("classifier_optimizer", "sgd"),
                                       ("lr_decay", 0.0)])
def test_bad_config_raises_usage_error(key, value):
    with pytest.raises(UsageError, match="oodgan"):
        OODGANConfig(**{key: value})


def test_tiny_fit_records_gan_series_and_round_trips_generator(tiny):
    train, val = tiny[0].subset(slice(0, 128)), tiny[1].subset(slice(0, 64))
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=2))
    m = OODGAN(OODGANConfig(ngf=4, ndf=4, nz=8), seed=0).fit(train, val, ctx)
    assert set(m.train_log.extra) == {"loss_d", "loss_g", "kl_fake", m.train_log.peak_memory_metric}
    assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in m.train_log.extra.values())
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    clone = OODGAN(OODGANConfig(ngf=4, ndf=4, nz=8)).load_state_dict(torch.load(buf, weights_only=True))
    z = torch.randn(3, 8, 1, 1)
    with torch.no_grad():
        assert torch.equal(m.generator(z), clone.generator(z))
