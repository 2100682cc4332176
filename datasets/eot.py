"""Expectation over transformation (EOT; Athalye, Carlini & Wagner, ICML 2018, "Obfuscated gradients give a false
sense of security", section 4.3; Athalye et al. 2018, "Synthesizing robust adversarial examples") for stochastic
methods: the attack follows the gradient of the *expected* loss over the method's randomness, estimated by the mean
of ``samples`` gradients, each through a fresh random draw.

The randomness is the method's own, through ``method.eot_classifier()``: for MC-dropout its dropout
(``dropout_on(model)`` puts the model in eval mode with only its dropout modules in train mode, as MC-dropout's
inference does; batch norm stays frozen), for SWAG one of its weight samples drawn at random per pass; every forward
pass draws anew and the gradient runs through the draw. FGSM and PGD are the torchattacks definitions (mean
cross-entropy, signed step, clip to [0, 1], PGD's uniform random start and projection onto the l_inf ball) with the
one gradient replaced by the EOT mean; with one sample and dropout off they are the deterministic attacks exactly
(tests/test_eot.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class dropout_on:
    """Eval mode except dropout (train mode), every module's mode restored on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        for m in self.model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.modes:
            m.train(mode)


class DropoutOn(nn.Module):
    """``net`` with its dropout on at every forward pass (eval mode otherwise, modes restored after each pass): the
    classifier an EOT attack sees for a dropout method (``ConfidenceMethod.eot_classifier``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with dropout_on(self.net):
            return self.net(x)


def eot_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int) -> torch.Tensor:
    """Mean over ``samples`` forward/backward passes of grad_x of the mean cross-entropy (the model's current
    mode decides whether the passes are random). Parameters receive no gradient."""
    x = x.detach().requires_grad_(True)
    total = torch.zeros_like(x)
    for _ in range(samples):
        total += torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
    return total / samples


def eot_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, samples: int) -> torch.Tensor:
    return (x + eps * eot_grad(model, x, y, samples).sign()).clamp(0, 1).detach()


def eot_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
            samples: int, random_start: bool = True) -> torch.Tensor:
    x = x.detach()
    adv = x.clone()
    if random_start:  # drawn from the global RNG, in the order torchattacks.PGD draws it
        adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv = adv + alpha * eot_grad(model, adv, y, samples).sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv
