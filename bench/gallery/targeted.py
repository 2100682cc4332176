"""``targeted_pgd``: targeted L-inf PGD from one digit towards each class, per network, and the judge's count of
how often another network labels such results as the target."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets.mnist import to_float
from bench.errors import UsageError
from bench.gallery.config import DEFAULT_TARGETED_EPS, GalleryConfig
from bench.gallery.draw import RIGHT, WRONG, draw_image, draw_perturbation, pyplot, row_label, save_figure
from bench.gallery.names import eps_of
from bench.gallery.run_view import RunView


def targeted_pgd(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float, steps: int,
                 step_size: float | None = None) -> torch.Tensor:
    """Targeted L-inf PGD without random start (deterministic): descend CE(f(x'), target) by signed steps of
    ``step_size`` (default 2.5 eps / steps), projecting onto the eps ball around ``x`` and onto [0, 1]. ``model``
    is used in eval mode and its mode restored; returns x' detached."""
    alpha = 2.5 * eps / steps if step_size is None else step_size
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        adv = x.detach().clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() - alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    finally:
        for m, mode in modes:
            m.train(mode)
    return adv.detach()


@dataclass
class TargetedRow:
    network: str
    adv: np.ndarray  # (10, 28, 28): towards class 0..9
    pert: np.ndarray
    pred: list[tuple[int, float]]
    judge_rate: float | None = None  # % of targeted results on more images the judge labels as the target


def run_linf_radius(view: RunView) -> float:
    """The run's largest L-inf attack radius (pgd, fgsm, uap with p=inf), else DEFAULT_TARGETED_EPS."""
    radii = []
    for s in view.eval_sets:
        fam = s.partition(":")[0]
        if fam in ("pgd", "fgsm") and eps_of(s):
            radii.append(eps_of(s))
        elif fam == "uap" and "p=inf" in s:
            m = re.search(r"xi=([0-9.]+)", s)
            radii.append(float(m.group(1)) if m else None)
    radii = [r for r in radii if r]
    return max(radii) if radii else DEFAULT_TARGETED_EPS


def targeted_rows(view: RunView, cfg: GalleryConfig, eps: float) -> tuple[np.ndarray, int, list[TargetedRow]]:
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[cfg.target_index : cfg.target_index + 1]).to(view.device)
    targets = torch.arange(10, device=view.device)
    rows = []
    for net in view.networks():
        adv = targeted_pgd(net.method.classifier, x.repeat(10, 1, 1, 1), targets, eps, cfg.targeted_steps)
        p = net.method.predict(adv)
        rows.append(TargetedRow(net.label, adv.cpu().numpy()[:, 0], (adv - x).cpu().numpy()[:, 0],
                                [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)]))
    return x.cpu().numpy()[0, 0], int(test.labels[cfg.target_index]), rows


def judge_rates(view: RunView, judge: str, eps: float, steps: int, n_images: int) -> dict[str, float]:
    """Per network other than the judge's: % of targeted PGD results (first ``n_images`` test images, every
    target other than the true class) that the judge's network classifies as the target."""
    jm = view.method(judge)
    if jm is None:
        raise UsageError(f"--judge {judge}: {view.load_errors.get(judge, 'not loadable')}")
    from bench.datasets.uap import model_hash

    jh = model_hash(jm.classifier)
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[:n_images]).to(view.device)
    y = test.labels[:n_images].to(view.device)
    xs = x.repeat_interleave(9, 0)
    # every target but the true class: (y + 1 .. y + 9) mod 10
    ts = (y.repeat_interleave(9) + torch.arange(1, 10, device=view.device).repeat(len(y))) % 10
    out = {}
    for net in view.networks():
        if model_hash(net.method.classifier) == jh:
            continue
        adv = targeted_pgd(net.method.classifier, xs, ts, eps, steps)
        pred = jm.predict(adv).probs.argmax(1).to(ts.device)
        out[net.label] = 100.0 * float((pred == ts).float().mean())
    return out


def draw_targeted(x: np.ndarray, label: int, rows: list[TargetedRow], eps: float, steps: int, judge: str,
                  n_judge: int, run_id: str, seed: int, index: int, out_dir: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(2 * len(rows), 11, figsize=(0.8 * 11 + 1.6, 1.7 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for i, r in enumerate(rows):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        draw_image(top[0], x, f"clean\n{label}")
        bottom[0].axis("off")
        for t in range(10):
            p, c = r.pred[t]
            draw_image(top[t + 1], r.adv[t], f"to {t}\n{p} ({c:.2f})", RIGHT if p == t else WRONG)
            im = draw_perturbation(bottom[t + 1], r.pert[t], eps)
        name = r.network if r.judge_rate is None else f"{r.network}\njudge: {r.judge_rate:.0f}% target"
        row_label(top[0], name)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="x_adv - x (pixels in [0, 1])")
    fig.suptitle(f"Targeted PGD from test image #{index} (a {label}) towards each class, L-inf eps {eps:g}",
                 fontsize=9)
    judged = (f" 'judge: N% target': of the targeted results on the first {n_judge} test images (9 targets each), "
              f"the % that {judge}'s network (never attacked here) labels as the target." if judge else "")
    caption = (f"Run {run_id}, seed {seed}. Not saved by any run: made here on the run's checkpoints ({steps} "
               f"signed steps of 2.5 eps / {steps}, no random start). Per network: top row the attacked images "
               "(title: the target class, then the prediction (confidence), green = the network now says the target), "
               "bottom row "
               f"the perturbation x_adv - x at +-{eps:g}. Perturbations that look like strokes of the target "
               f"digit mean the network's gradients follow the digits' shapes.{judged}")
    return save_figure(fig, out_dir, "targeted_pgd", caption)
