"""One reliability diagram per method (``reliability_<method>.png/.pdf``), from a run's saved predictions.

Top panel: per equal-width bin of the confidence (the maximum of the method's class probabilities, the quantity
the ECE metric bins; 15 right-closed bins as ``metrics.ece``), the accuracy of the images in the bin as a bar, the
gap to the bin's mean confidence shaded above or below it, the diagonal of perfect calibration, and each bin's
image count printed above its bar. Bottom panel: the counts themselves (log scale), since on MNIST nearly every
image sits in the last bin and the other bars rest on a handful of images. Seeds and folds are pooled; the title
gives the ECE of the pooled images and their number. Drawn on the in-distribution test set of the run (``mnist``,
or the clean test set of the run's benchmark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.report.plots import N_BINS, _plt, _safe, _save, id_sets, predictions, reliability
from bench.report.runs import RunSet


def reliability_figure(method: str, probs: np.ndarray, labels: np.ndarray, eval_set: str = "mnist",
                       n_bins: int = N_BINS):
    """The figure (two axes: accuracy bars, count bars) of one method's pooled predictions."""
    plt = _plt()
    mean_conf, acc, count = reliability(probs, labels, n_bins)
    width = 1.0 / n_bins
    centers = (np.arange(n_bins) + 0.5) * width
    ece = float(np.nansum(np.abs(acc - mean_conf) * count) / count.sum() * 100)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.2, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centers, np.nan_to_num(acc), width=width, edgecolor="black", linewidth=0.5, label="accuracy")
    top.bar(centers, np.nan_to_num(mean_conf - acc), bottom=np.nan_to_num(acc), width=width, color="tab:red",
            alpha=0.35, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
    for x, a, n in zip(centers, acc, count):
        if n > 0:
            top.text(x, min(float(a), 0.93) + 0.02, f"{int(n)}", ha="center", va="bottom", fontsize=5, rotation=90)
    top.set(title=f"{method} on {eval_set}: ECE {ece:.2f}%, {int(count.sum())} images", ylabel="accuracy",
            xlim=(0, 1), ylim=(0, 1.08))
    top.legend(fontsize=6, loc="upper left")
    bottom.bar(centers, count, width=width, color="tab:gray", edgecolor="black", linewidth=0.5)
    bottom.set(xlabel=f"confidence: max class probability ({n_bins} bins)", ylabel="images")
    if count.max() > 0:
        bottom.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_reliability_per_method(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    sets = id_sets(runs)
    if not sets:
        return []
    paths: list[Path] = []
    for m in methods:
        preds = predictions(runs, m, sets[0])
        if not preds:
            continue
        probs = np.concatenate([p["probs"] for p in preds])
        labels = np.concatenate([p["labels"] for p in preds])
        paths += _save(reliability_figure(m, probs, labels, sets[0]), Path(out_dir), f"reliability_{_safe(m)}")
    return paths
