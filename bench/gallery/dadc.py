"""``dadc``: the examples people flagged on ``bench serve``, with what each served method said at the time."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.gallery.draw import RIGHT, WRONG, draw_image, pyplot, save_figure
from bench.gallery.run_view import RunView

DADC_MAX = 20


def draw_dadc(view: RunView, out_dir: Path) -> list[Path]:
    from bench.dadc.preprocess import from_png
    from bench.dadc.store import DadcStore

    store = DadcStore(view.dir)
    if not store.exists():
        raise BenchError(f"dadc: no examples were flagged for this run (no {store.path}; collect some with "
                         f"python -m bench serve --run {view.dir})")
    examples = store.examples()[-DADC_MAX:]
    if not examples:
        raise BenchError(f"dadc: {store.path} holds no examples yet")
    preds = {e.id: {p.method: p for p in store.predictions(e.id)} for e in examples}
    methods = [m for m in dict.fromkeys(p for e in examples for p in preds[e.id]) if m in view.methods]
    if not methods:
        raise BenchError("dadc: none of the selected methods was shown on the examples")
    plt = pyplot()
    k = len(examples)
    fig, axes = plt.subplots(1 + len(methods), k, figsize=(0.85 * k + 1.2, 0.95 + 0.32 * len(methods)),
                             gridspec_kw={"height_ratios": [3] + [1] * len(methods)},
                             squeeze=False, layout="constrained")
    for j, e in enumerate(examples):
        draw_image(axes[0, j], from_png(e.image_png) / 255.0, f"#{e.id}: true {e.label}")
        for i, m in enumerate(methods):
            ax = axes[1 + i, j]
            ax.axis("off")
            p = preds[e.id].get(m)
            if p is not None:
                ax.text(0.5, 0.5, f"{p.predicted} ({p.confidence:.2f})" + (f" r{p.round}" if p.round else ""),
                        color=RIGHT if p.predicted == e.label else WRONG, fontsize=7, ha="center", va="center",
                        transform=ax.transAxes)
            if j == 0:
                ax.text(-0.1, 0.5, m, fontsize=7, ha="right", va="center", transform=ax.transAxes)
    fig.suptitle("DADC: digits people drew to fool the models, and what each method said", fontsize=9)
    caption = (f"Run {view.manifest.get('run_id', view.dir.name)}. The last {k} examples flagged on bench serve "
               "(the 28x28 image the models saw, the digit the person gave); under each, the prediction "
               "(confidence) each served method made at the time, stored with the example ('rN': a fine-tuning "
               "round N model); green = right, red = wrong.")
    return save_figure(fig, out_dir, "dadc", caption)
