"""Report tables read back from a report CSV (``bench report --out x.csv``): re-typeset a committed leaderboard in
another format or layout without its run directories.

The CSV holds every aggregate a table shows (n, mean, std, bootstrap interval, best, Holm-adjusted p-value), one row
per (group, eval set, metric, method), in table order. Nothing is recomputed except the "not worse than the best"
mark, which is re-read from ``p_holm`` at the requested ``alpha``; plots need the runs' predictions and are refused.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from bench.errors import UsageError
from bench.report.counts import COUNT_METRICS, SetCount
from bench.report.export import CSV_FIELDS
from bench.report.groups import MEAN_SET, group_spec
from bench.report.metric_facts import metric_info
from bench.report.tables import Cell, Column, ReportTable, select, short_set

NUMBERS = ("n", "mean", "std", "ci_low", "ci_high", "p_holm")  # the numeric columns; empty = not available


def _float(text: str) -> float:
    return float(text) if text.strip() else float("nan")


def _check_rows(p: Path, rows: list[dict]) -> None:
    """Every row complete and every numeric cell a number, or one line naming the CSV line (the header is line 1;
    a quoted cell spanning lines would shift the count, and `bench report` writes none)."""
    for line, r in enumerate(rows, start=2):
        if None in r or any(v is None for v in r.values()):  # DictReader: extra cells under None, missing ones None
            got = len([v for k, v in r.items() if k is not None and v is not None]) + len(r.get(None) or [])
            raise UsageError(f"{p} line {line} has {got} cells, not {len(CSV_FIELDS)}; write the CSV again with "
                             "`bench report RUN --out FILE.csv`")
        for key in NUMBERS:
            try:
                value = _float(r[key])
                if key == "n" and not value.is_integer():
                    raise ValueError
            except ValueError:
                raise UsageError(f"{p} line {line}: {key}={r[key]!r} is not a number; write the CSV again with "
                                 "`bench report RUN --out FILE.csv`") from None
def _counts(rows: list[dict[str, str]], methods: list[str], sets: list[str]) -> dict[str, SetCount]:
    """A table's counts from its count rows (``bench.report.export.to_csv``), for the methods and sets it keeps."""
    out = {}
    for name in sets:
        mine = [r for r in rows if r["eval_set"] == name and r["method"] in methods]
        images = [_float(r["mean"]) for r in mine if r["metric"] == "n_images"]
        if images:
            errors = {r["method"]: _float(r["mean"]) for r in mine if r["metric"] == "n_errors"}
            out[name] = SetCount(sum(images) / len(images), errors)
    return out


def read_report_csv(path: str | Path, alpha: float = 0.05, ci: bool = False, metrics: list[str] | None = None,
                    methods: list[str] | None = None, groups: list[str] | None = None,
                    sets: list[str] | None = None) -> list[ReportTable]:
    """The tables of a report CSV, filtered like ``build_tables`` (names or wildcards; unknown ones raise)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_FIELDS:
                raise UsageError(f"{p} is not a CSV written by `bench report` (its columns are not "
                                 f"{','.join(CSV_FIELDS)})")
            rows = list(reader)
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{p} is not UTF-8 text (`bench report` writes UTF-8); save it as UTF-8 or write it again "
                         "with `bench report RUN --out FILE.csv`") from None
    except csv.Error as e:
        raise UsageError(f"{p} does not parse as CSV ({e})") from None
    if not rows:
        raise UsageError(f"{p} has no rows; write it again with `bench report RUN --out {p.name}`")
    _check_rows(p, rows)
    counted = [r for r in rows if r["metric"] in COUNT_METRICS]  # the counts under each table, not columns
    rows = [r for r in rows if r["metric"] not in COUNT_METRICS]
    if sets:
        keep_sets = set(select(sets, list(dict.fromkeys(r["eval_set"] for r in rows)), "eval set"))
        rows = [r for r in rows if r["eval_set"] in keep_sets]
    all_methods = list(dict.fromkeys(r["method"] for r in rows))
    keep_methods = select(methods, all_methods, "method") if methods else all_methods
    keep_metrics = set(select(metrics, sorted({r["metric"] for r in rows}), "metric")) if metrics else None
    order = list(dict.fromkeys(r["group"] for r in rows))
    keep_groups = set(select(groups, order, "group")) if groups else set(order)
    tables = []
    for gkey in order:
        if gkey not in keep_groups:
            continue
        g = [r for r in rows if r["group"] == gkey and r["method"] in keep_methods
             and (keep_metrics is None or r["metric"] in keep_metrics)]
        if not g:
            continue
        keys = list(dict.fromkeys((r["eval_set"], r["metric"]) for r in g))
        sets = list(dict.fromkeys(s for s, _ in keys))
        columns = []
        for ds, met in keys:
            info = metric_info(met)
            set_label = "" if len(sets) == 1 else ("mean" if ds == MEAN_SET else short_set(ds))
            columns.append(Column(ds, met, set_label, info.label, info.better, info.unit, info.digits))
        index = {k: j for j, k in enumerate(keys)}
        cells = {}
        for r in g:
            p_holm = _float(r["p_holm"])
            cells[(r["method"], index[(r["eval_set"], r["metric"])])] = Cell(
                _float(r["mean"]), _float(r["std"]), int(r["n"]), _float(r["ci_low"]), _float(r["ci_high"]),
                r["best"] == "1", math.isfinite(p_holm) and p_holm >= alpha, p_holm if math.isfinite(p_holm) else None)
        if ci and not any(math.isfinite(c.ci_low) for c in cells.values()):
            raise UsageError(f"{p} holds no bootstrap intervals for group {gkey}; write it with --ci, or leave "
                             "--ci out")
        title = group_spec(gkey)[0]
        present = [m for m in keep_methods if any(r["method"] == m for r in g)]
        tables.append(ReportTable(gkey, title, present, columns, cells, max(c.n for c in cells.values()), ci, alpha,
                                  counts=_counts([r for r in counted if r["group"] == gkey], present, sets)))
    if not tables:
        raise UsageError("nothing to report: no selected metric occurs for the selected methods")
    return tables
