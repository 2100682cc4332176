"""Terminal summary of a run: methods x key metrics, mean +- std over seeds and folds."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.table import Table

ID_COLUMNS = [("accuracy", "Acc %"), ("auroc", "AUROC"), ("aupr_error", "AUPR-Err"), ("fpr95", "FPR95"),
              ("aurc", "AURC"), ("ece", "ECE %")]
COST_COLUMNS = [("sec_per_epoch", "s/epoch"), ("peak_cuda_mem_mb", "peak CUDA MiB"), ("peak_rss_mb", "peak RSS MiB"),
                ("params", "params"), ("infer_ms_per_1k", "ms/1k img")]
DIGITS = {"infer_ms_per_1k": 1, "params": 0, "peak_cuda_mem_mb": 0, "peak_rss_mb": 0}


def aggregate(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean, std and count over seeds/folds for each (method, eval_set, metric)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["method", "eval_set", "metric"], sort=False)["value"]
    return g.agg(["mean", "std", "count"]).reset_index()


def fmt(mean: float, std: float, count: int, digits: int = 2) -> str:
    if pd.isna(mean):
        return "nan"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if count > 1 and not pd.isna(std) else "")


def _table(title: str, agg: pd.DataFrame, cols: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("method", style="bold", no_wrap=True)
    for _, _, label in cols:
        table.add_column(label, justify="right", no_wrap=True)
    index = {(r.method, r.eval_set, r.metric): r for r in agg.itertuples()}
    for method in agg["method"].unique():
        cells = []
        for eval_set, metric, _ in cols:
            r = index.get((method, eval_set, metric))
            cells.append("" if r is None else fmt(r.mean, r.std, r.count, DIGITS.get(metric, 2)))
        table.add_row(method, *cells)
    return table


def summary_tables(rows: list[dict[str, Any]], id_set: str = "mnist") -> list[Table]:
    """Three tables that fit a terminal: in-distribution metrics, OOD AUROC, cost."""
    agg = aggregate(rows)
    if agg.empty:
        return []
    present = {(r.eval_set, r.metric) for r in agg.itertuples()}
    sets = list(agg["eval_set"].unique())
    ood_sets = [s for s in sets if s.startswith("ood:")]
    other_sets = [s for s in sets if s not in ood_sets and s not in (id_set, "cost")]
    id_cols = [(id_set, m, label) for m, label in ID_COLUMNS] + [(s, "accuracy", f"Acc {s}") for s in other_sets]
    ood_cols = [(s, "ood_auroc", s[4:]) for s in ood_sets]
    cost_cols = [("cost", m, label) for m, label in COST_COLUMNS]
    n = int(agg["count"].max())
    spread = f"mean ± std over {n} seeds/folds" if n > 1 else "one seed"
    return [
        _table(f"{id_set} test: accuracy and misclassification detection (%; {spread})", agg,
               [c for c in id_cols if c[:2] in present]),
        _table(f"OOD detection AUROC (%; {id_set} test = positive)", agg, [c for c in ood_cols if c[:2] in present]),
        _table("cost (training on the run's device; peak RSS is the whole process's)", agg,
               [c for c in cost_cols if c[:2] in present]),
    ]
