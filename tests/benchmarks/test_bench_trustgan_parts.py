"""Where a lenet ``trustgan`` batch goes, against an ``msp`` batch (batch 128, CPU, one run side by side):
the whole trustgan step, and the attacker's own passes (forward+backward as in the attacker step, forward without
grad as in the target-on-attacker-samples step). docs/trustgan.md reads the ratios of these rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bench.methods.backbones import create_backbone
from bench.methods.trustgan import TrustGANConfig, _Trainer
from bench.methods.trustgan_nets import Attacker

BATCH = 128


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


def _noise() -> torch.Tensor:
    return torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)


def test_msp_batch(benchmark, batch):
    x, y = batch
    net = create_backbone("lenet").train()
    opt = torch.optim.Adam(net.parameters(), 2e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=3)


def test_trustgan_batch(benchmark, batch):
    x, y = batch
    torch.manual_seed(0)
    gan = Attacker(1, 3).to(memory_format=torch.channels_last)  # the auto size against lenet
    run = _Trainer(create_backbone("lenet"), gan, TrustGANConfig(), torch.device("cpu"), 10, 0)
    benchmark.pedantic(lambda: run.step(x, y, 2), rounds=15, iterations=1, warmup_rounds=3)  # epoch 2: attacker on


def test_attacker_forward_backward(benchmark):
    gan = Attacker(1, 3).to(memory_format=torch.channels_last).train()
    benchmark.pedantic(lambda: gan(_noise()).square().mean().backward(), rounds=15, iterations=1, warmup_rounds=3)


def test_attacker_forward_no_grad(benchmark):
    gan = Attacker(1, 3).to(memory_format=torch.channels_last).eval()

    def fwd():
        with torch.no_grad():
            gan(_noise())

    benchmark.pedantic(fwd, rounds=15, iterations=1, warmup_rounds=3)
