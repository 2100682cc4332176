"""``fooling_<set>``: rubbish-class images regenerated per network, one per target class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.gallery.draw import RIGHT, WRONG, draw_image, pyplot, row_label, save_figure
from bench.gallery.names import safe_name
from bench.gallery.run_view import RunView


@dataclass
class FoolingRow:
    network: str
    images: np.ndarray  # (10, 28, 28), target class = column
    reached: np.ndarray  # target posterior
    pred: list[tuple[int, float]]
    agree: int
    compared: int


def fooling_rows(view: RunView, eval_set: str) -> list[FoolingRow]:
    from bench.datasets.adversarial import parse_params
    from bench.datasets.fooling import fooling_images

    q = parse_params(eval_set.partition(":")[2], "fooling", {"n": int, "steps": int, "eps": float})
    steps, eps = int(q.get("steps", 60)), float(q.get("eps", 0.25))
    rows = []
    for net in view.networks():
        model = net.method.classifier
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:  # the run's first 10 images: the same seeded noise and target i mod 10
            imgs, reached = fooling_images(model, 10, steps, eps, getattr(net.method, "num_classes", 10), view.device)
        finally:
            for m, mode in modes:
                m.train(mode)
        p = net.method.predict(imgs.to(view.device))
        saved = view.saved(net.methods[0], eval_set)
        agree = compared = 0
        if saved is not None and len(saved["probs"]) >= 10:
            compared = 10
            agree = int((saved["probs"][:10].argmax(1) == p.probs.numpy().argmax(1)).sum())
        rows.append(FoolingRow(net.label, imgs.numpy()[:, 0], reached.numpy(),
                               [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)],
                               agree, compared))
    return rows


def draw_fooling(eval_set: str, rows: list[FoolingRow], run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 10, figsize=(0.85 * 10 + 1.6, 1.0 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for i, r in enumerate(rows):
        for t in range(10):
            p, c = r.pred[t]
            draw_image(axes[i, t], r.images[t], f"to {t}\n{p} ({c:.2f})", WRONG if p == t else RIGHT)
        row_label(axes[i, 0], r.network)
    fig.suptitle(f"Fooling images ({eval_set}): noise pushed towards each class", fontsize=9)
    agree, compared = sum(r.agree for r in rows), sum(r.compared for r in rows)
    check = (f" The regenerated images get the run's saved prediction {agree} of {compared} times." if compared
             else "")
    caption = (f"Run {run_id}, seed {seed}. Regenerated (the run saves predictions only): the set's first 10 "
               f"images per network, seeded uniform noise moved towards class 0..9 by gradient ascent.{check} "
               "Title: the target class, then the predicted class (confidence); red = fooled into the target class.")
    return save_figure(fig, out_dir, safe_name(eval_set), caption)
