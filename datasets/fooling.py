"""Fooling images ("rubbish class", Nguyen, Yosinski, Clune CVPR 2015): images that are not digits but that a
model classifies with high confidence, made per model by gradient ascent on a class posterior from noise.

``fooling[:n=N,steps=S,eps=E]``: N images (default 1000) of uniform noise (fixed seed), target class i mod 10.
Each step moves an image by 0.01 along the sign of grad_x log softmax(f(x))_target (the posterior, following
Nguyen et al.'s gradient-ascent variant after Simonyan et al. 2013), projected onto the L-inf ball of radius E
(default 0.25) around its starting noise and onto [0, 1], for S steps (default 60); an image stops moving once the
target posterior reaches 0.99. The small radius keeps them noise-like: no digit can be drawn with 0.25 of
contrast over noise of mean 0.5. The model is the method's ``classifier`` in eval mode (see adversarial.py for how
stochastic methods are attacked).

The set is OOD-kind: every method's mean confidence on it and its AUROC against the MNIST test set are reported
like any OOD set. Extra rows: ``fooling_target_prob`` (mean target posterior of the attacked classifier, %),
``fooling_success`` (% reaching 0.99), ``gen_seconds``.
"""

from __future__ import annotations

import time

import torch

from bench.datasets.adversarial import parse_params
from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.errors import UsageError

FOOLING_SEED = 2015
STEP = 0.01
TARGET_PROB = 0.99


def fooling_images(model: torch.nn.Module, n: int, steps: int, eps: float, num_classes: int, device: torch.device,
                   batch: int = 1000, shape: tuple[int, int, int] = (1, 28, 28)) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float [0, 1] on CPU, reached target posterior); ``shape`` (C, H, W) of the data's images."""
    start = torch.rand((n, *shape), generator=torch.Generator().manual_seed(FOOLING_SEED))
    target = torch.arange(n) % num_classes
    out, probs = [], []
    for i in range(0, n, batch):
        x0, y = start[i : i + batch].to(device), target[i : i + batch].to(device)
        x = x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            logp = model(x).log_softmax(1).gather(1, y[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(logp.sum(), x)
            moving = (logp.detach().exp() < TARGET_PROB).float()[:, None, None, None]
            if not moving.any():
                break
            x = x.detach() + STEP * grad.sign() * moving
            x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)
        with torch.no_grad():
            probs.append(model(x).softmax(1).gather(1, y[:, None]).squeeze(1).cpu())
        out.append(x.detach().cpu())
    return torch.cat(out), torch.cat(probs)


def parse(params: str) -> tuple[int, int, float]:
    q = parse_params(params, "fooling", {"n": int, "steps": int, "eps": float})
    n, steps, eps = int(q.get("n", 1000)), int(q.get("steps", 60)), float(q.get("eps", 0.25))  # type: ignore[arg-type]
    if n < 1 or steps < 1 or not 0 < eps <= 1:
        raise UsageError(f"fooling:{params}: needs n >= 1, steps >= 1 and eps in (0, 1]")
    return n, steps, eps


def _build(ctx: EvalContext, method, params: str = "") -> EvalData:
    n, steps, eps = parse(params)
    n = ctx.cap(n)
    model = method.classifier
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        t0 = time.perf_counter()
        images, reached = fooling_images(model, n, steps, eps, getattr(method, "num_classes", 10), device,
                                          shape=ctx.shape)
        seconds = time.perf_counter() - t0
    finally:
        for m, mode in modes:
            m.train(mode)
    extra = {"fooling_target_prob": 100 * float(reached.mean()),
             "fooling_success": 100 * float((reached >= TARGET_PROB).float().mean()), "gen_seconds": seconds}
    name = f"fooling:{params}" if params else "fooling"
    return EvalData(name, images, torch.full((n,), -1), "ood", "fooling", severity=f"eps={eps:g}", group="far",
                    extra=extra)


# ``fooling`` (defaults) and ``fooling:n=...,steps=...,eps=...`` (a family; the bare name builds the defaults).
EVAL_SETS.add("fooling", EvalSetSpec(_build, offline=True, needs_model=True, family=True,
                                     defaults=("fooling:eps=0.25",), check=parse, report_group="fooling",
                                     any_shape=True),
              "rubbish-class images per model: gradient ascent on a class posterior from noise "
              "(fooling:n=,steps=,eps=)")
