"""Terminal summary of a run: methods x key metrics, mean +- std over seeds and folds."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.table import Table

from bench.report.counts import counts_text, set_counts
from bench.report.metric_facts import metric_info

ID_COLUMNS = ("accuracy", "auroc", "aupr_error", "fpr95", "aurc", "ece")
COST_COLUMNS = ("sec_per_epoch", "peak_cuda_mem_mb", "peak_rss_mb", "params", "infer_ms_per_1k")
# Headers are the metrics' display names (bench/report/metric_facts.py); the in-distribution table's title says "%", and
# its two headers that name a fraction of images rather than a score say it too.
PERCENT_HEADERS = ("accuracy", "ece")


def _header(metric: str) -> str:
    return metric_info(metric).label + (" %" if metric in PERCENT_HEADERS else "")


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


def _counts(agg: pd.DataFrame, sets: list[str]) -> str:
    """The images and errors behind a table's sets (counts.py), from the means over seeds; '' without them."""
    return counts_text(set_counts(agg.rename(columns={"mean": "value"}), list(dict.fromkeys(sets))))


def _table(title: str, agg: pd.DataFrame, cols: list[tuple[str, str, str]]) -> Table:
    told = _counts(agg, [eval_set for eval_set, _, _ in cols]) if "n_images" in set(agg["metric"]) else ""
    table = Table(title=title, title_justify="left", caption=told or None, caption_justify="left")
    table.add_column("method", style="bold", no_wrap=True)
    for _, _, label in cols:
        table.add_column(label, justify="right", no_wrap=True)
    index = {(r.method, r.eval_set, r.metric): r for r in agg.itertuples()}
    for method in agg["method"].unique():
        cells = []
        for eval_set, metric, _ in cols:
            r = index.get((method, eval_set, metric))
            cells.append("" if r is None else fmt(r.mean, r.std, r.count, metric_info(metric).digits))
        table.add_row(method, *cells)
    return table


def _short(name: str) -> str:
    """Column label of an eval set inside its family's table: ``pmnist:triple`` -> ``triple``."""
    return name.split(":", 1)[1] if ":" in name else name


def summary_tables(rows: list[dict[str, Any]], groups: dict[str, dict[str, str]] | None = None,
                   id_set: str | None = None) -> list[Table]:
    """Tables that fit a terminal: in-distribution metrics; accuracy on shifted sets, one table per shift family
    (occlusion, adversarial, ...); OOD AUROC, near sets before far; cost. ``groups`` is the manifest's
    ``eval_set_groups`` (OOD near/far). ``id_set``: default the unshifted ID-kind set of ``groups`` (a --data
    run's test part), else mnist."""
    if id_set is None:
        clean = [s for s, g in (groups or {}).items() if g.get("kind") == "id" and g.get("shift") == "none"]
        id_set = clean[0] if len(clean) == 1 else "mnist"
    agg = aggregate(rows)
    if agg.empty:
        return []
    df = pd.DataFrame(rows)
    present = {(r.eval_set, r.metric) for r in agg.itertuples()}
    sets = list(dict.fromkeys(agg["eval_set"]))
    ood_sets = [s for s in sets if (s, "ood_auroc") in present]
    shifted = [s for s in sets if s not in ood_sets and s not in (id_set, "cost") and (s, "accuracy") in present]
    family = {s: str(df.loc[df["eval_set"] == s, "shift"].iloc[0]).split("/")[0] for s in shifted}
    n = int(agg["count"].max())
    spread = f"mean ± std over {n} seeds/folds" if n > 1 else "one seed"
    tables = [_table(f"{id_set} test: accuracy and misclassification detection (%; {spread})", agg,
                     [(id_set, m, _header(m)) for m in ID_COLUMNS if (id_set, m) in present])]
    for fam in dict.fromkeys(family.values()):
        cols = [(s, "accuracy", _short(s)) for s in shifted if family[s] == fam]
        tables.append(_table(f"accuracy % under shift: {fam}", agg, cols))
    if ood_sets:
        group = {s: (groups or {}).get(s, {}).get("group", "") for s in ood_sets}
        ordered = sorted(ood_sets, key=lambda s: {"near": 0, "far": 1}.get(group[s], 2))
        label = {s: s[4:] if s.startswith("ood:") else s for s in ordered}
        cols = [(s, "ood_auroc", f"{label[s]} ({group[s]})" if group[s] else label[s]) for s in ordered]
        tables.append(_table(f"OOD detection AUROC (%; {id_set} test = positive)", agg, cols))
    cost = [("cost", m, _header(m)) for m in COST_COLUMNS if ("cost", m) in present]
    if cost:  # saved outputs (bench score) have no cost rows: no empty table under a wrapped caption
        tables.append(_table("cost (training on the run's device; peak RSS is the whole process's)", agg, cost))
    return tables
