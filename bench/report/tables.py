"""Leaderboard tables from finished runs: ``build_tables`` turns a ``RunSet``'s tidy rows into one ``ReportTable`` per
report group (groups.py: in-distribution, occlusion, adversarial, OOD near, OOD far, cost, ...), each cell the
mean, std and optional bootstrap interval over (seed, fold) units with the "not worse than the best" mark of a
paired test (stats.py); columns take their labels, directions, units and decimals from metric_facts.py.
``bench.report.export`` writes the tables as Markdown, LaTeX, CSV or HTML. Runs are read by runs.py.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.errors import UsageError
from bench.report.counts import COUNT_METRICS, SetCount, counts_text, set_counts
from bench.report.groups import FAMILY_VIEWS, GROUPS, MEAN_SET, VIEWS, group_spec, row_groups
from bench.report.metric_facts import metric_info
from bench.report.runs import RunSet
from bench.report.stats import bootstrap_ci, compare_to_best, summarize


@dataclass(frozen=True)
class Column:
    eval_set: str
    metric: str
    set_label: str  # eval set shown above the metric ('' when the group has a single set)
    label: str
    better: int
    unit: str
    digits: int


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    best: bool = False
    tied: bool = False
    p_holm: float | None = None


@dataclass
class ReportTable:
    key: str  # group key (id, occlusion, adversarial, ood-near, ood-far, ood, cost, or another shift)
    title: str
    methods: list[str]
    columns: list[Column]
    cells: dict[tuple[str, int], Cell]  # (method, column index) -> cell
    units: int  # most (seed, fold) units behind one cell
    ci: bool = False
    alpha: float = 0.05
    part: str = ""  # which slice of the group this table holds when a layout splits it (bench.report.layout)
    #: eval set -> its images and each method's errors per seed (bench/report/counts.py); empty for runs without counts
    counts: dict[str, SetCount] = field(default_factory=dict)

    def caption(self, mark: str = "marked") -> str:
        """What the table shows and how to read it; ``mark`` names how a writer marks ties with the best."""
        text = caption(self.key, self.units, self.ci, self.alpha, self.columns, mark)
        told = counts_text(self.counts, short_set)
        return f"{text[:-1]}; {told}." if told else text


def select(names: list[str], available: list[str], what: str) -> list[str]:
    """Names or wildcards, in the given order, each matching something in ``available``."""
    out: list[str] = []
    for pat in names:
        hits = fnmatch.filter(available, pat) if any(c in pat for c in "*?[") else [pat] if pat in available else []
        if not hits:
            close = difflib.get_close_matches(pat, available, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (present: {', '.join(sorted(available))})"
            raise UsageError(f"unknown {what} {pat!r}: not in these runs{hint}")
        out.extend(h for h in hits if h not in out)
    return out


def _set_order(eval_sets: list[str], rows: pd.DataFrame) -> list[str]:
    """Eval sets ordered by family, then numeric severity, then name."""
    def key(name: str) -> tuple[str, float, str]:
        sev = rows.loc[rows["eval_set"] == name, "severity"].iloc[0]
        return name.split(":")[0], severity_value(sev), name

    return sorted(eval_sets, key=key)


def severity_value(severity: Any) -> float:
    """The last number in a severity string ('eps=0.1' -> 0.1, '0.25' -> 0.25, UAP 'inf:0.2' -> 0.2, the
    radius); nan when there is none (named variants such as PMNIST cuts)."""
    found = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(severity))
    return float(found[-1]) if found else float("nan")


def short_set(name: str) -> str:
    return name.removeprefix("ood:")


def build_tables(runs: RunSet, metrics: list[str] | None = None, methods: list[str] | None = None,
                 ci: bool = False, alpha: float = 0.05, groups: list[str] | None = None,
                 sets: list[str] | None = None) -> list[ReportTable]:
    """One table per evaluation group present in the rows. ``metrics`` (names or wildcards) replaces each
    group's default columns; ``methods`` filters and orders the rows; ``groups`` (names or wildcards: id,
    occlusion, adversarial, ood-near, ood-far, ood, cost, or another shift family) keeps only those tables, and adds
    the views it names (groups.VIEWS: failure, guarantees, coverage; placed before cost); ``sets`` (names or
    wildcards) keeps only those eval sets' rows (cost rows are the set "cost"). Unknown names raise UsageError."""
    rows = runs.rows
    if sets:
        rows = rows[rows["eval_set"].isin(select(sets, list(dict.fromkeys(rows["eval_set"])), "eval set"))]
    all_methods = list(dict.fromkeys(rows["method"]))
    method_list = select(methods, all_methods, "method") if methods else all_methods
    # the counts are stated under each table (bench/report/counts.py), never as columns of their own
    shown = sorted(set(rows["metric"].unique()) - set(COUNT_METRICS))
    chosen = select(metrics, shown, "metric") if metrics else None
    rows = rows[rows["method"].isin(method_list)].copy()
    rows["gkey"] = row_groups(rows)
    order = list(GROUPS) + sorted(set(rows["gkey"]) - set(GROUPS))
    order.remove("cost")
    if groups:
        views = [k for k, (_, mets, _) in VIEWS.items() if rows["metric"].isin(mets).any()]
        order += views
    order.append("cost")
    if groups:
        present = [k for k in order if k in views or (rows["gkey"] == k).any()]
        keep = set(select(groups, present, "group"))
        order = [k for k in order if k in keep]
    tables = []
    for gkey in order:
        if gkey in VIEWS:  # rows of the view's groups (every group when it names none)
            shown = VIEWS[gkey][2]
            g = rows[rows["gkey"].isin(shown)] if shown else rows
        else:
            g = rows[rows["gkey"] == gkey]
        if g.empty:
            continue
        title, defaults = group_spec(gkey)
        wanted = [m for m in (chosen if chosen is not None else defaults) if m in set(g["metric"])]
        if not wanted:
            continue
        counted = g[g["metric"].isin(COUNT_METRICS)]
        g = g[g["metric"].isin(wanted)]
        shown_sets = _set_order(list(g["eval_set"].unique()), g)
        counts = set_counts(counted, shown_sets)
        if gkey in FAMILY_VIEWS:
            g, shown_sets, counts = *_family_mean(g, shown_sets), {}
        if (gkey.startswith("ood") or gkey == "shift") and len(shown_sets) > 1:  # (never a view: its sets are mixed)
            g = pd.concat([g, _group_mean(g)], ignore_index=True)
            shown_sets = [*shown_sets, MEAN_SET]
        tables.append(_table(gkey, title, g, shown_sets, wanted, method_list, ci, alpha, counts))
    if not tables:
        raise UsageError("nothing to report: no selected metric occurs for the selected methods")
    return tables


def family(eval_set: str) -> str:
    """An eval set's family: its name before the parameters ('fgsm:eps=0.1' -> 'fgsm', 'mnistc:fog' -> 'mnistc')."""
    return eval_set.partition(":")[0]


def _family_mean(g: pd.DataFrame, sets: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Per (method, seed, fold, metric) mean over each family's sets, as rows whose eval set is the family (only
    units that have every set of the family, as _group_mean), and the families in report order (their group's place
    in GROUPS, then name), so the in-distribution set comes first."""
    g = g.assign(eval_set=g["eval_set"].map(family))
    n_sets = pd.Series([family(s) for s in sets]).value_counts()
    keys = ["method", "seed", "fold", "metric", "eval_set"]
    agg = g.groupby(keys, sort=False)["value"].agg(["mean", "count"]).reset_index()
    agg = agg[agg["count"] == agg["eval_set"].map(n_sets)]
    rank = {k: i for i, k in enumerate(GROUPS)}
    group_of = g.groupby("eval_set")["gkey"].first()
    families = sorted(dict.fromkeys(family(s) for s in sets), key=lambda f: (rank.get(group_of[f], len(rank)), f))
    return agg.rename(columns={"mean": "value"}).drop(columns="count"), families


def _group_mean(g: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed, fold, metric) mean over the group's eval sets (only units that have every set)."""
    n_sets = g["eval_set"].nunique()
    keys = ["method", "seed", "fold", "metric"]
    agg = g.groupby(keys, sort=False)["value"].agg(["mean", "count"]).reset_index()
    agg = agg[agg["count"] == n_sets]
    return agg.rename(columns={"mean": "value"}).drop(columns="count").assign(eval_set=MEAN_SET)


def _table(gkey: str, title: str, g: pd.DataFrame, sets: list[str], wanted: list[str], method_list: list[str],
           ci: bool, alpha: float, counts: dict[str, SetCount] | None = None) -> ReportTable:
    columns: list[Column] = []
    for ds in sets:
        for met in wanted:
            if not ((g["eval_set"] == ds) & (g["metric"] == met)).any():
                continue
            info = metric_info(met)
            set_label = "" if len(sets) == 1 else ("mean" if ds == MEAN_SET else short_set(ds))
            columns.append(Column(ds, met, set_label, info.label, info.better, info.unit, info.digits))
    present = [m for m in method_list if m in set(g["method"])]
    values: dict[tuple[str, str], dict[str, dict[tuple[int, int], float]]] = {}
    for r in g.itertuples(index=False):
        values.setdefault((r.eval_set, r.metric), {}).setdefault(r.method, {})[(r.seed, r.fold)] = r.value
    cells: dict[tuple[str, int], Cell] = {}
    units = 0
    for j, col in enumerate(columns):
        per_method = values.get((col.eval_set, col.metric), {})
        verdicts = compare_to_best(per_method, col.better, alpha)
        for m, vals in per_method.items():
            mean, std, n = summarize(vals.values())
            lo, hi = bootstrap_ci(list(vals.values())) if ci else (float("nan"), float("nan"))
            v = verdicts[m]
            cells[(m, j)] = Cell(mean, std, n, lo, hi, v.best, v.tied, v.p_holm)
            units = max(units, n)
    return ReportTable(gkey, title, present, columns, cells, units, ci, alpha, counts=counts or {})


def caption(gkey: str, units: int, ci: bool, alpha: float, columns: list[Column], mark: str = "marked") -> str:
    spread = (f"mean ± std over {units} seeds/folds" if units > 1 else "a single seed (no spread, no test)")
    parts = [spread]
    if ci and units > 1:
        parts.append("[95% percentile-bootstrap CI of the mean]")
    pct = [c.label for c in columns if c.unit == "%"]
    raw = sorted({c.label for c in columns if c.unit == ""})
    if pct:
        parts.append("values in %" + (f" except {', '.join(raw)}" if raw and gkey != "cost" else ""))
    if gkey == "cost":
        parts.append("s = seconds, MiB = 2^20 bytes; peak RSS is the whole process's (CPU runs); the first epoch "
                     "is reported apart from the mean epoch time")
    if gkey.startswith("ood"):
        parts.append("positives = in-distribution test images (OpenOOD counts OOD as positive)")
    if gkey == "coverage":
        parts.append("each column is a family of eval sets (all its severities and variants), the per-seed mean of "
                     "the % of images whose label is in their set (LAC, APS, RAPS at target 90%, calibrated on the "
                     "validation split) and of SGR's error % among accepted images (target 2%)")
    if gkey == "guarantees":
        parts.append("covNN = % of images whose label is in their set at target coverage NN%, calibrated on the "
                     "validation split (guaranteed >= NN% only where test images are exchangeable with it); sizeNN = "
                     "mean classes per set; SGR risk = error % among the images accepted at the calibrated threshold "
                     "(target 2%, delta 0.001), SGR cov = % accepted")
    if any(c.eval_set == MEAN_SET for c in columns):
        parts.append("mean = average over the group's sets per seed")
    parts.append("↑ higher is better, ↓ lower is better; best mean per column in bold")
    if units > 1:
        parts.append(f"{mark}: not significantly different from the best (two-sided paired t-test across seeds, "
                     f"Holm-corrected over the methods in the column, α = {alpha:g})")
    return "; ".join(parts) + "."
