"""Universal perturbation by stochastic gradient ascent (Shafahi, Najibi, Xu, Dickerson, Davis, Goldstein, AAAI 2020,
"Universal adversarial training", Algorithm 1 / section 3): one perturbation v shared by every image, updated on
mini-batches to *increase* the classifier's loss, projected back onto the l_p ball of radius xi after every step.

The paper's loss is the cross-entropy clipped from above (min(l, beta)) so that images already fooled stop
dominating the gradient; here the label is the classifier's clean prediction (the fooling rate is measured against
it, as in Moosavi-Dezfooli et al.). The step is a signed gradient step for L-inf (what the paper uses: an FGSM-like
update of size ``lr * xi``) and a normalised gradient step of the same length for L2. The step shrinks linearly
over the passes (a pass = one sweep over the ``n`` images in shuffled mini-batches), and the v with the best
fooling rate on the ``n`` images after any pass is kept (the later one on ties). Everything is batched: a pass over
1,000 MNIST images is a handful of forward/backward passes, against one DeepFool search per image for Algorithm 1 of
the CVPR paper.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.utils import single_thread


def _project(v: torch.Tensor, xi: float, p: str) -> torch.Tensor:
    if p == "inf":
        return v.clamp(-xi, xi)
    norm = float(v.norm())
    return v * min(1.0, xi / norm) if norm > 0 else v


@torch.no_grad()
def _fooling(model: nn.Module, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, batch: int = 2000) -> float:
    fooled = 0
    for i in range(0, len(x), batch):
        fooled += int((model((x[i : i + batch] + v).clamp(0, 1)).argmax(1) != clean[i : i + batch]).sum())
    return fooled / max(len(x), 1)


def sgd_perturbation(model: nn.Module, images: torch.Tensor, clean: torch.Tensor, xi: float, p: str, *,
                     passes: int = 10, batch_size: int = 100, lr: float = 0.2, beta: float = 9.0,
                     delta: float = 0.2, budget_s: float = 120.0, seed: int = 0
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """v (1, C, H, W) on ``images``' device and stats. ``clean``: the classifier's predictions on ``images``
    (the labels whose loss is raised). ``lr``: the first step's length as a fraction of xi."""
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with single_thread(images.device):  # one thread, as DeepFool: robust on a shared CPU
        return _ascend(model, images, clean, xi, p, passes, batch_size, lr, beta, delta, budget_s, g, t0)


def _ascend(model: nn.Module, images: torch.Tensor, clean: torch.Tensor, xi: float, p: str, passes: int,
            batch_size: int, lr: float, beta: float, delta: float, budget_s: float, g: torch.Generator, t0: float
            ) -> tuple[torch.Tensor, dict[str, float]]:
    v = torch.zeros_like(images[:1])
    best_v, best, done, out_of_time = v.clone(), 0.0, 0, False
    for k in range(passes):
        step = lr * xi * (1 - k / passes)  # linear decay to lr * xi / passes on the last pass
        for idx in torch.randperm(len(images), generator=g).split(batch_size):
            idx = idx.to(images.device)
            v.requires_grad_(True)
            loss = F.cross_entropy(model((images[idx] + v).clamp(0, 1)), clean[idx], reduction="none")
            (grad,) = torch.autograd.grad(loss.clamp(max=beta).mean(), v)
            with torch.no_grad():
                if p == "inf":
                    v = v + step * grad.sign()
                else:
                    v = v + step * grad / grad.norm().clamp_min(1e-12)
                v = _project(v, xi, p)
            if time.perf_counter() - t0 > budget_s:
                out_of_time = True
                break
        v = v.detach()
        done += 1
        rate = _fooling(model, images, clean, v)
        if rate >= best:  # ties: the later v (it has climbed the loss further)
            best, best_v = rate, v.clone()
        if best >= 1 - delta or out_of_time:
            break
    norm = float(best_v.abs().max()) if p == "inf" else float(best_v.norm())
    return best_v, {"uap_train_fooling_rate": 100 * best, "uap_passes": float(done),
                    "gen_seconds": time.perf_counter() - t0, "uap_norm": norm, "uap_budget_hit": float(out_of_time)}
