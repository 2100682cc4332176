"""``uap_<set>``: each network's universal perturbation from the run's UAP cache (recomputed when missing), and a
digit with it added."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.datasets import evalsets
from bench.datasets.mnist import to_float
from bench.gallery.draw import RIGHT, WRONG, draw_image, draw_perturbation, pyplot, save_figure
from bench.gallery.names import safe_name
from bench.gallery.run_view import RunView


@dataclass
class UapRow:
    network: str
    v: np.ndarray  # (28, 28)
    cached: bool
    example: np.ndarray  # clip(x + v)
    pred: tuple[int, float]
    fooling: float | None  # the run's uap_fooling_rate


def uap_rows(view: RunView, eval_set: str) -> tuple[int, list[UapRow]]:
    from bench.datasets.uap import cache_path, parse

    q = parse(eval_set.partition(":")[2])
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[:1]).to(view.device)
    rows = []
    for net in view.networks():
        model = net.method.classifier
        path = cache_path(view.ctx_args["cache_dir"], model, q)
        cached = path is not None and path.exists()
        if not cached:  # the set's own builder computes it with the run's parameters and caches it
            evalsets.build(eval_set, view.context(max_eval=1), net.method)
        v = torch.load(path, map_location="cpu", weights_only=True)["v"].to(view.device)
        ex = (x + v).clamp(0, 1)
        p = net.method.predict(ex)
        rows.append(UapRow(net.label, v.cpu().numpy()[0, 0], cached, ex.cpu().numpy()[0, 0],
                           (int(p.probs[0].argmax()), float(p.confidence[0])),
                           view.metric(net.methods[0], eval_set, "uap_fooling_rate")))
    return int(test.labels[0]), rows


def draw_uap(eval_set: str, label: int, rows: list[UapRow], run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = pyplot()
    scale = max(float(np.abs(r.v).max()) for r in rows) or 1.0
    fig, axes = plt.subplots(2, len(rows), figsize=(1.25 * len(rows) + 1.2, 3.0),
                             squeeze=False, layout="constrained")
    im = None
    for j, r in enumerate(rows):
        fool = f"fools {r.fooling:.0f}%" if r.fooling is not None else ""
        im = draw_perturbation(axes[0, j], r.v, scale, f"{r.network}\n{fool}" + ("" if r.cached else "\n(regenerated)"))
        p, c = r.pred
        draw_image(axes[1, j], r.example, f"{label} + v: {p} ({c:.2f})", RIGHT if p == label else WRONG)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="v (pixels in [0, 1])")
    fig.suptitle(f"Universal perturbation of each network ({eval_set})", fontsize=9)
    regen = [r.network for r in rows if not r.cached]
    where = ("from the UAP cache the run wrote" if not regen else
             f"from the run's UAP cache, except {', '.join(regen)}: not in the cache, recomputed here with the "
             "run's parameters")
    caption = (f"Run {run_id}, seed {seed}. Top: each network's single perturbation v, {where}; one colour scale "
               f"for all (+-{scale:.3g}, red = brighter). 'fools N%': the run's fooling rate on the test set "
               "(prediction changed). Bottom: the first test image plus v, clipped to [0, 1]: predicted class "
               "(confidence), green = still right.")
    return save_figure(fig, out_dir, safe_name(eval_set), caption)
