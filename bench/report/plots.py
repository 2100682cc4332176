"""Plots of finished runs (matplotlib, Agg backend), each written as PNG and PDF.

From the saved per-sample predictions: risk-coverage curves and reliability diagrams on the in-distribution test
set, confidence histograms of the in-distribution test set against each OOD set. From the tidy rows: accuracy and
misclassification AUROC versus severity for every shift family with a numeric severity (occlusion fraction, FGSM
eps, ...), and cost bars (seconds per epoch, peak memory). Curves pool or average over seeds/folds as each title
says. Needs the ``plots`` extra (``pip install -e '.[plots]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.report.groups import row_groups
from bench.report.metric_facts import metric_info
from bench.report.runs import RunSet
from bench.report.tables import severity_value, short_set
from bench.run.store import read_predictions
from bench.utils import atomic_write_bytes, figure_bytes

N_BINS = 15  # reliability bins, as the ECE metric


def check_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plots needs matplotlib: pip install -e '.[plots]'") from None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        # rendered in memory, then written atomically: no half-written figure, and a full disk names the folder
        atomic_write_bytes(path, figure_bytes(fig, ext, dpi=150 if ext == "png" else None))
        paths.append(path)
    plt.close(fig)
    return paths


def line_style(i: int) -> dict[str, Any]:
    """Matplotlib keywords for the i-th method: tab10 colours, then a new marker (and line style) for each further
    ten, so that up to 80 methods stay distinguishable on one axis (tests check every registered method)."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[i // 10 % 4],
            "marker": ("o", "s", "^", "D", "v", "P", "X", "*")[i // 10 % 8]}


def _legend_right(fig, ax) -> None:
    # outside the axes: with a dozen methods an inside legend hides the curves it names
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


# ----------------------------------------------------------------------------------------- per-sample loading
def id_sets(runs: RunSet) -> list[str]:
    """The clean in-distribution test sets of the runs (rows of shift 'none'), mnist first."""
    rows = runs.rows
    sets = sorted(set(rows.loc[rows["shift"].isin(["none", ""]), "eval_set"]) - {"cost"})
    return sorted(sets, key=lambda s: s != "mnist")


def id_set(runs: RunSet) -> str:
    """The test set the ID plots draw: the runs' own (fashion for a Fashion-MNIST run), mnist when there are
    several."""
    sets = id_sets(runs)
    return sets[0] if sets else ""


def predictions(runs: RunSet, method: str, eval_set: str) -> list[dict[str, np.ndarray]]:
    """The saved predictions (probs, confidence, labels) of every (seed, fold) of a method on an eval set."""
    cells = runs.rows[(runs.rows["method"] == method) & (runs.rows["eval_set"] == eval_set)]
    out = []
    for (rid, seed, fold), _ in cells.groupby(["run_id", "seed", "fold"], sort=True):
        path = runs.prediction(rid, method, int(seed), int(fold), eval_set)
        if path.exists():
            out.append(read_predictions(path))
    return out


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk %) with samples accepted in decreasing confidence; ties broken by input order."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    errors = ~np.asarray(correct, dtype=bool)[order]
    k = np.arange(1, errors.size + 1)
    return k / errors.size, 100.0 * np.cumsum(errors) / k


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of max-probability (right-closed, as ``metrics.ece``): (mean confidence, accuracy,
    count); empty bins are nan."""
    conf = probs.max(1)
    hit = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, n_bins) / count
        acc = np.bincount(b, hit, n_bins) / count
    return mean_conf, acc, count


# ----------------------------------------------------------------------------------------- plots
def plot_risk_coverage(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    plt = _plt()
    ds = id_set(runs)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = 0
    for i, m in enumerate(methods):
        preds = predictions(runs, m, ds)
        if not preds:
            continue
        curves = [risk_coverage(p["confidence"], p["probs"].argmax(1) == p["labels"]) for p in preds]
        n = min(len(c[0]) for c in curves)
        risk = np.mean([c[1][:n] for c in curves], axis=0) if all(len(c[0]) == n for c in curves) else curves[0][1]
        ax.plot(curves[0][0][:n] * 100, risk, label=f"{m} (n={len(curves)})", **{**line_style(i), "marker": None})
        drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.set(title=f"Risk-coverage on {ds} test (mean over seeds/folds)", xlabel="coverage (%)",
           ylabel="selective risk: error rate among accepted (%)", xlim=(0, 100))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend_right(fig, ax)
    return _save(fig, out_dir, "risk_coverage")


def plot_reliability(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    plt = _plt()
    ds = id_set(runs)
    data = {m: predictions(runs, m, ds) for m in methods}
    data = {m: p for m, p in data.items() if p}
    if not data:
        return []
    rows, cols = _grid(len(data))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    width = 1.0 / N_BINS
    for ax, (m, preds) in zip(axes.flat, data.items()):
        probs = np.concatenate([p["probs"] for p in preds])
        labels = np.concatenate([p["labels"] for p in preds])
        mean_conf, acc, count = reliability(probs, labels)
        centers = (np.arange(N_BINS) + 0.5) * width
        ece = float(np.nansum(np.abs(acc - mean_conf) * count) / count.sum() * 100)
        ax.bar(centers, np.nan_to_num(acc), width=width, edgecolor="black", linewidth=0.5, label="accuracy")
        ax.bar(centers, np.nan_to_num(mean_conf - acc), bottom=np.nan_to_num(acc), width=width, color="tab:red",
               alpha=0.35, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
        ax.set(title=f"{m}: ECE {ece:.2f}%", xlabel="max softmax probability", ylabel="accuracy", xlim=(0, 1),
               ylim=(0, 1))
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability diagrams on {ds} test ({N_BINS} bins, seeds/folds pooled)")
    fig.tight_layout()
    return _save(fig, out_dir, "reliability")


def plot_confidence_histograms(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    plt = _plt()
    ds = id_set(runs)
    ood_sets = sorted(runs.rows.loc[runs.rows["shift"] == "ood", "eval_set"].unique())
    paths: list[Path] = []
    for ood in ood_sets:
        data = {m: (predictions(runs, m, ds), predictions(runs, m, ood)) for m in methods}
        data = {m: d for m, d in data.items() if d[0] and d[1]}
        if not data:
            continue
        rows, cols = _grid(len(data))
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
        for ax, (m, (pid, pood)) in zip(axes.flat, data.items()):
            c_id = np.concatenate([p["confidence"] for p in pid])
            c_ood = np.concatenate([p["confidence"] for p in pood])
            lo, hi = float(min(c_id.min(), c_ood.min())), float(max(c_id.max(), c_ood.max()))
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 41)
            ax.hist(c_id, bins=bins, density=True, alpha=0.55, label=f"{ds} (ID)")
            ax.hist(c_ood, bins=bins, density=True, alpha=0.55, label=f"{short_set(ood)} (OOD)")
            ax.set(title=m, xlabel="confidence (higher = more trusted)", ylabel="density")
        for ax in list(axes.flat)[len(data):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        group = runs.ood_groups.get(ood, "")
        fig.suptitle(f"Confidence: {ds} test vs {ood}{f' ({group} OOD)' if group else ''}, seeds pooled")
        fig.tight_layout()
        paths += _save(fig, out_dir, f"confidence_{_safe(ood)}")
    return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _mean_std(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.groupby(["method", "x"], sort=True)["value"].agg(["mean", "std"]).reset_index()


def plot_severity(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    """Accuracy and misclassification AUROC versus severity, one figure per shift family with a numeric
    severity; the clean test set is drawn at severity 0."""
    plt = _plt()
    rows = runs.rows[runs.rows["method"].isin(methods)]
    shifted = rows[[g in ("occlusion", "adversarial") or (s not in ("none", "ood", "cost", ""))
                    for s, g in zip(rows["shift"], row_groups(rows))]]
    paths: list[Path] = []
    for family, fam in shifted.groupby("shift", sort=True):
        fam = fam.assign(x=[severity_value(s) for s in fam["severity"]])
        if fam["x"].isna().any() or fam["x"].nunique() < 2:
            continue  # named variants (e.g. PMNIST cuts) are in the tables, not on a severity axis
        clean = rows[rows["eval_set"] == id_set(runs)].assign(x=0.0)
        metrics = [m for m in ("accuracy", "auroc") if m in set(fam["metric"])]
        if not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
        for ax, metric in zip(axes.flat, metrics):
            both = pd.concat([clean[clean["metric"] == metric], fam[fam["metric"] == metric]])
            stats = _mean_std(both)
            for i, m in enumerate(methods):
                s = stats[stats["method"] == m]
                if len(s):
                    ax.errorbar(s["x"], s["mean"], yerr=s["std"].fillna(0), capsize=3, label=m, markersize=4,
                                **line_style(i))
            what = "accuracy" if metric == "accuracy" else "misclassification AUROC"
            ax.set(title=f"{family}: {what} vs severity", xlabel=_severity_label(family), ylabel=f"{what} (%)")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        _legend_right(fig, axes.flat[0])
        paths += _save(fig, out_dir, f"severity_{_safe(family)}")
    return paths


def _severity_label(family: str) -> str:
    if family in ("fgsm", "pgd", "fgsm-transfer"):
        return "eps (L-inf, pixel scale [0, 1]); 0 = clean"
    if family in ("occlusion", "pmnist"):
        return "occluded fraction of the image; 0 = clean"
    return "severity; 0 = clean"


def plot_cost(runs: RunSet, methods: list[str], out_dir: Path) -> list[Path]:
    plt = _plt()
    cost = runs.rows[(runs.rows["shift"] == "cost") & runs.rows["method"].isin(methods)]
    panels = [m for m in ("sec_per_epoch", "peak_cuda_mem_mb", "peak_rss_mb", "infer_ms_per_1k")
              if m in set(cost["metric"])]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    order = [m for m in methods if m in set(cost["method"])]
    for ax, metric in zip(axes.flat, panels):
        s = cost[cost["metric"] == metric].groupby("method")["value"].agg(["mean", "std"]).reindex(order)
        ax.bar(range(len(order)), s["mean"], yerr=s["std"].fillna(0), capsize=3, color="tab:blue")
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
        info = metric_info(metric)
        titles = {"sec_per_epoch": "Training time per epoch", "peak_cuda_mem_mb": "Peak CUDA memory (training)",
                  "peak_rss_mb": "Peak process RSS (CPU run)", "infer_ms_per_1k": "Inference time"}
        units = {"sec_per_epoch": "seconds / epoch", "peak_cuda_mem_mb": "MiB", "peak_rss_mb": "MiB",
                 "infer_ms_per_1k": "ms / 1,000 images"}
        ax.set(title=titles.get(metric, info.label), ylabel=units.get(metric, info.unit))
        ax.grid(axis="y", alpha=0.3)
    devices = "; ".join(runs.device_names)
    fig.suptitle(f"Cost (mean ± std over seeds/folds) on {devices}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "cost")


__all__: list[Any] = ["check_available", "line_style", "reliability", "risk_coverage"]
