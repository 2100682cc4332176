"""``samples_<set>``: a fixed sample of a model-free eval set, with every method's saved prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.datasets import evalsets
from bench.datasets.mnist import to_float
from bench.errors import BenchError
from bench.gallery.config import GALLERY_SEED, SAMPLE_SIZE
from bench.gallery.draw import NEUTRAL, RIGHT, WRONG, draw_image, pyplot, save_figure
from bench.gallery.names import safe_name
from bench.gallery.run_view import RunView


def sample_indices(labels: np.ndarray, k: int = SAMPLE_SIZE, seed: int = GALLERY_SEED) -> np.ndarray:
    """The fixed sample of a set: with labels, one seeded random example of each class present (in class order,
    up to ``k``); without (OOD, label -1), ``k`` seeded random indices in increasing order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if classes:
        return np.array([int(rng.choice(np.flatnonzero(labels == c))) for c in classes[:k]], dtype=int)
    return np.sort(rng.choice(len(labels), size=min(k, len(labels)), replace=False))


@dataclass
class SamplePanel:
    """The fixed sample of one eval set: images (k, 28, 28) in [0, 1], true labels (-1: none), and per method
    the saved predicted class and confidence at those indices."""

    eval_set: str
    indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    rows: list[tuple[str, np.ndarray, np.ndarray]]  # (method, predicted (k,), confidence (k,))


def sample_panel(view: RunView, eval_set: str) -> SamplePanel:
    """Rebuilds the set as the run did (same cap); raises BenchError with the reason when it cannot."""
    saved = {m: view.saved(m, eval_set) for m in view.methods}
    saved = {m: s for m, s in saved.items() if s is not None}
    if not saved:
        raise BenchError(f"samples of {eval_set}: the run saved no predictions for it")
    if eval_set.startswith("fgsm-transfer"):
        _check_transfer_source(view, eval_set)
    data = evalsets.build(eval_set, view.context())
    labels = data.labels.cpu().numpy()
    for m, s in saved.items():
        if len(s["labels"]) != len(labels) or not np.array_equal(s["labels"], labels):
            raise BenchError(f"samples of {eval_set}: rebuilt now, its labels differ from those {m} saw in the run")
    idx = sample_indices(labels)
    images = to_float(data.images[torch.as_tensor(idx)]).cpu().numpy()[:, 0]
    rows = [(m, s["probs"][idx].argmax(1), s["confidence"][idx]) for m, s in saved.items()]
    return SamplePanel(eval_set, idx, images, labels[idx], rows)


def _check_transfer_source(view: RunView, eval_set: str) -> None:
    """fgsm-transfer images need the fixed source model; a gallery never trains it."""
    from bench.cache import CheckpointCache
    from bench.datasets.adversarial import SOURCE_SEED, parse_params
    from bench.datasets.splits import SplitSpec
    from bench.methods.core.base import FitContext
    from bench.methods.core.training import TrainRecipe

    source = str(parse_params(eval_set.partition(":")[2], "fgsm-transfer", {"eps": float, "source": str})
                 .get("source", "lenet"))
    recipe = TrainRecipe(optimizer="adam", lr=2e-3, batch_size=128, epochs=3)  # as adversarial.source_model
    key = FitContext(recipe=recipe, split_id=SplitSpec().split_id).baseline_key(source, 10, SOURCE_SEED)
    if CheckpointCache(view.ctx_args["cache_dir"]).get(key) is None:
        raise BenchError(f"samples of {eval_set}: its source model is not in the cache "
                         f"{view.ctx_args['cache_dir']} (a gallery does not train it)")


def draw_samples(panel: SamplePanel, run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = pyplot()
    k, m = len(panel.indices), len(panel.rows)
    fig, axes = plt.subplots(1 + m, k, figsize=(0.85 * k + 1.2, 0.95 + 0.32 * m),
                             gridspec_kw={"height_ratios": [3] + [1] * m},
                             squeeze=False, layout="constrained")
    labelled = bool((panel.labels >= 0).any())
    for j in range(k):
        true = f"true {panel.labels[j]}" if panel.labels[j] >= 0 else f"#{panel.indices[j]}"
        draw_image(axes[0, j], panel.images[j], true)
        for i, (method, pred, conf) in enumerate(panel.rows):
            ax = axes[1 + i, j]
            ax.axis("off")
            color = NEUTRAL if not labelled else (RIGHT if pred[j] == panel.labels[j] else WRONG)
            ax.text(0.5, 0.5, f"{pred[j]} ({conf[j]:.2f})", color=color, fontsize=7, ha="center", va="center",
                    transform=ax.transAxes)
            if j == 0:
                ax.text(-0.1, 0.5, method, fontsize=7, ha="right", va="center", transform=ax.transAxes)
    fig.suptitle(f"{panel.eval_set}: what each method answers (prediction and confidence)", fontsize=9)
    what = ("green = right, red = wrong" if labelled else
            "no true class (out of distribution): any confident answer is a mistake")
    caption = (f"Run {run_id}, seed {seed}. A fixed sample of {panel.eval_set} (one seeded example per class "
               f"where there are classes; gallery seed {GALLERY_SEED}); under each image, each method's predicted "
               f"class and confidence from the run's saved predictions ({what}; confidence is each method's own "
               "score, higher = more trustworthy).")
    return save_figure(fig, out_dir, f"samples_{safe_name(panel.eval_set)}", caption)
