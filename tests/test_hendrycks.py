"""Hendrycks & Gimpel's MNIST baseline: the hg-mlp backbone (initialisation, GELU, raw pixels), the hendrycks
profile's recipe and their unclipped Gaussian noise set."""

from __future__ import annotations

import math

import torch

from bench.config import load_profile, resolve
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone


def test_initialisation_rows_have_their_norms_and_biases_are_zero():
    torch.manual_seed(0)
    net = create_backbone("hg-mlp")
    # each unit's incoming weights: unit norm, divided by sqrt(1.425), sqrt(0.85), sqrt(0.85), sqrt(1.425)
    for fc, scale in ((net.fc1, 1.425), (net.fc2, 0.85), (net.fc3, 0.85), (net.fc4, 1.425)):
        norms = fc.weight.norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 1 / math.sqrt(scale)))
        assert torch.count_nonzero(fc.bias) == 0
    torch.manual_seed(0)
    again = create_backbone("hg-mlp")
    assert torch.equal(again.fc2.weight, net.fc2.weight)  # drawn from the seeded global RNG


def test_forward_is_three_tanh_gelu_layers_on_raw_pixels():
    torch.manual_seed(1)
    net = create_backbone("hg-mlp").eval()
    x = torch.rand(2, 1, 28, 28)

    def gelu(z):  # the tanh approximation written out, as in their code
        return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))

    h = x.flatten(1)  # no mean/std normalisation
    for fc in (net.fc1, net.fc2, net.fc3):
        h = gelu(h @ fc.weight.T + fc.bias)
    torch.testing.assert_close(net(x), h @ net.fc4.weight.T + net.fc4.bias)


def test_profile_is_their_recipe():
    cfg = resolve([load_profile("hendrycks")], {n: METHODS.get(n).Config for n in METHODS.names()})
    t = cfg.train
    assert cfg.backbone == "hg-mlp"
    assert (t.optimizer, t.lr, t.batch_size, t.epochs, t.weight_decay) == ("adam", 1e-3, 128, 30, 1e-5)
    # lr 1e-3 for epochs 1-20, 1e-4 for 21-30 (their "if epoch >= 20" with 0-based epochs)
    assert (t.scheduler, t.step_size, t.gamma) == ("step", 20, 0.1)


def test_unclipped_gaussian_noise_set():
    d = evalsets.build("hg:gaussian", EvalContext(max_eval=500))
    assert d.images.shape == (500, 1, 28, 28) and (d.kind, d.shift, d.group) == ("ood", "ood", "far")
    x = d.images.flatten()
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01  # N(0, 1) over 392k pixels
    assert float(x.min()) < -3 and float(x.max()) > 3  # not clipped to [0, 1]
    assert "hg:gaussian" not in evalsets.offline_sets()  # never a default set
    assert torch.equal(d.images, evalsets.build("hg:gaussian", EvalContext(max_eval=500)).images)
