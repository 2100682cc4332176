"""Where a ``trustgan`` batch goes, against an ``msp`` batch on the same backbone (CPU, one run side by side): the
whole trustgan step and the attacker's own passes (forward+backward as in the attacker step, forward without grad
as in the target-on-attacker-samples step). Two settings: lenet with the auto attacker (size 3), batch 128, and
the default trustgan target ``trustgan-net`` 7 with the original attacker (size 5), batch 32 (its batch of 512
takes several seconds per msp step on one core). Last, the target's dilation-32 convolution (its last unit, 64
channels) as we compute it (saturated shortcut) and as a replicate-padded conv, the reference's way.
docs/trustgan.md reads the ratios of these rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.methods.core.backbones import create_backbone
from bench.methods.trustgan import TrustGANConfig, _Trainer
from bench.methods.trustgan_nets import Attacker, DilatedConv

SETTINGS = {"lenet": (3, 128, 15), "trustgan-net": (5, 32, 5)}  # backbone: (attacker size, batch, rounds)


def _batch(backbone: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = SETTINGS[backbone][1]
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _noise(backbone: str) -> torch.Tensor:
    return torch.rand(SETTINGS[backbone][1], 1, 28, 28).contiguous(memory_format=torch.channels_last)


def _run(benchmark, backbone: str, fn) -> None:
    benchmark.pedantic(fn, rounds=SETTINGS[backbone][2], iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("backbone", SETTINGS)
def test_msp_batch(benchmark, backbone):
    x, y = _batch(backbone)
    net = create_backbone(backbone).train()
    opt = torch.optim.Adam(net.parameters(), 2e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    _run(benchmark, backbone, step)


@pytest.mark.parametrize("backbone", SETTINGS)
def test_trustgan_batch(benchmark, backbone):
    x, y = _batch(backbone)
    torch.manual_seed(0)
    gan = Attacker(1, SETTINGS[backbone][0]).to(memory_format=torch.channels_last)
    run = _Trainer(create_backbone(backbone), gan, TrustGANConfig(), torch.device("cpu"), 10,
                   torch.Generator().manual_seed(0))
    _run(benchmark, backbone, lambda: run.step(x, y, 2))  # epoch 2: the attacker steps are on


@pytest.mark.parametrize("backbone", SETTINGS)
def test_attacker_forward_backward(benchmark, backbone):
    gan = Attacker(1, SETTINGS[backbone][0]).to(memory_format=torch.channels_last).train()
    _run(benchmark, backbone, lambda: gan(_noise(backbone)).square().mean().backward())


@pytest.mark.parametrize("backbone", SETTINGS)
def test_attacker_forward_no_grad(benchmark, backbone):
    gan = Attacker(1, SETTINGS[backbone][0]).to(memory_format=torch.channels_last).eval()

    def fwd():
        with torch.no_grad():
            gan(_noise(backbone))

    _run(benchmark, backbone, fwd)


@pytest.mark.parametrize("how", ["saturated", "padded"])
def test_dilation32_conv_forward_backward(benchmark, how):
    conv = DilatedConv(64, 64, dilation=32, weight_norm=True)
    x = torch.rand(32, 64, 28, 28, requires_grad=True)

    def padded(x):
        w = torch._weight_norm(conv.weight_v, conv.weight_g, 0)
        return F.conv2d(F.pad(x, (32,) * 4, mode="replicate"), w, conv.bias, dilation=32)

    fn = conv if how == "saturated" else padded
    benchmark.pedantic(lambda: fn(x).square().mean().backward(), rounds=10, iterations=1, warmup_rounds=2)
