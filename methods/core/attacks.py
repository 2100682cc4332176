"""Training-time attacks in pixel space (inputs in [0, 1]; models normalise inside), shared by ``advtrain`` and
``cure``. Evaluation attacks live in ``bench.datasets`` (torchattacks); these are the few lines a training step
needs, written so that the model's train/eval mode is the caller's choice and no parameter gradient is left behind.

- ``fgsm``: Goodfellow et al. 2015, x + eps * sign(grad), no random start.
- ``fgsm_rs``: Wong, Rice & Kolter 2020 ("Fast is better than free"): delta ~ U(-eps, eps), one signed step of
  ``step_size`` (their default 1.25 * eps), projected back onto the eps ball.
- ``pgd``: Madry et al. 2018: random start in the eps ball, ``steps`` signed steps of ``step_size``, each followed
  by projection onto the l_inf ball and clipping to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTACKS = ("fgsm", "fgsm_rs", "pgd")


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed per-sample cross-entropy w.r.t. the input (so row i is grad_x l(x_i, y_i), free of
    the batch size). Parameters receive no gradient."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int = 1,
            step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """An l_inf adversarial version of ``x`` (detached, in [0, 1]) for ``attack`` in ``ATTACKS``. ``step_size``
    defaults to eps (fgsm), 1.25 eps (fgsm_rs) and 2.5 eps / steps (pgd). Random starts draw from ``generator``
    (on CPU) so a seeded training run stays reproducible."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; expected one of {', '.join(ATTACKS)}")
    x = x.detach()
    if eps <= 0:
        return x.clone()
    if attack == "fgsm":
        return (x + eps * input_grad(model, x, y).sign()).clamp(0, 1).detach()
    if attack == "fgsm_rs":
        steps, alpha = 1, (1.25 * eps if step_size is None else step_size)
    else:
        alpha = 2.5 * eps / steps if step_size is None else step_size
    start = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device, x.dtype) * eps
    adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        adv = adv + alpha * input_grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv
