"""Layouts: how the cells of one evaluation group are arranged into tables (``bench report --layout``).

``build_tables`` makes one table per group with every (eval set, metric) column side by side: the ``group`` layout,
which Markdown and HTML keep by default (they have no page width). The layouts papers use slice it:

- ``metrics``: methods x metrics, one table per eval set (the in-distribution table is one);
- ``sets``: methods x eval sets, one table per metric, the group's mean column last where it has one (OOD AUROC over
  every OOD set);
- ``severity``: methods x severity, one table per (family, metric) for families of two or more sets that differ in one
  numeric parameter (``fgsm:eps=0.1``, ``occlusion:random-squares=0.3``); the group's other sets follow as ``sets``;
- ``auto``: ``metrics`` for in-distribution and cost, ``severity`` for occlusion and adversarial, ``sets`` for the
  rest (OOD groups, other shift families). The LaTeX writer's default.

A group of one eval set is one methods x metrics table in every layout but ``group``.
Slicing moves cells, it never recomputes them: marks (best, not worse than the best) stay those of the column.
"""

from __future__ import annotations

import math
from dataclasses import replace

from bench.errors import UsageError
from bench.report.groups import MEAN_SET
from bench.report.metric_facts import metric_info
from bench.report.tables import ReportTable, short_set

LAYOUTS = ("auto", "group", "metrics", "sets", "severity")
AUTO = {"id": "metrics", "cost": "metrics", "occlusion": "severity", "adversarial": "severity",  # others: sets
        "failure": "metrics", "guarantees": "metrics", "coverage": "sets"}
#: views too wide for one table, and how Markdown/HTML's default (``group``) still cuts them: per eval set, per metric
WIDE_VIEWS = {"guarantees": "metrics", "coverage": "sets"}


def layout_for(group: str, layout: str) -> str:
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return AUTO.get(group, "sets") if layout == "auto" else layout


def numeric_severity(eval_set: str) -> tuple[str, str, float] | None:
    """(family, parameter, value) of a set named ``family:param=value`` with one numeric parameter, else None
    (named variants such as ``pmnist:triple``, several parameters such as ``uap:xi=4,p=2,...``)."""
    family, _, params = eval_set.partition(":")
    if params.count("=") != 1 or "," in params:
        return None
    axis, _, value = params.partition("=")
    try:
        v = float(value)
    except ValueError:
        return None
    return (family, axis, v) if math.isfinite(v) else None


def set_labels(names: list[str]) -> dict[str, str]:
    """Short column labels for eval sets side by side: parameters every set of a family shares are dropped
    (``uap:xi=4,p=2,n=200`` and ``uap:xi=0.2,p=inf,n=200`` -> ``xi=4,p=2`` and ``xi=0.2,p=inf``), and the family
    prefix too when the labels stay distinct (``ood:fashion`` -> ``fashion``)."""
    parsed = {n: (n.partition(":")[0], n.partition(":")[2].split(",")) for n in names if n != MEAN_SET}
    shared: dict[str, set[str]] = {}
    for fam, params in parsed.values():
        shared[fam] = set(params) if fam not in shared else shared[fam] & set(params)
    short = {}
    for n, (fam, params) in parsed.items():
        kept = [p for p in params if p not in shared[fam]] if sum(f == fam for f, _ in parsed.values()) > 1 else params
        short[n] = ",".join(p for p in kept if p) or fam
    if len(set(short.values())) < len(short):  # distinct only with their family
        short = {n: f"{parsed[n][0]}:{s}" if s != parsed[n][0] else s for n, s in short.items()}
    return {**short, **({MEAN_SET: "mean"} if MEAN_SET in names else {})}


def _slice(t: ReportTable, idx: list[int], part: str, labels: dict[int, tuple[str, str]] | None = None
           ) -> ReportTable:
    """A table of columns ``idx`` of ``t`` (cells moved, marks kept); ``labels`` renames (set label, label)."""
    cols = []
    for j in idx:
        c = t.columns[j]
        set_label, label = labels[j] if labels else ("", c.label)
        cols.append(replace(c, set_label=set_label, label=label))
    cells = {(m, k): t.cells[(m, j)] for k, j in enumerate(idx) for m in t.methods if (m, j) in t.cells}
    units = max((c.n for c in cells.values()), default=0)
    counts = {s: n for s, n in t.counts.items() if s in {c.eval_set for c in cols}}  # those of the slice's sets
    return replace(t, columns=cols, cells=cells, units=units, part=part, counts=counts)


def _by_metric(t: ReportTable, idx: list[int], prefix: str = "") -> list[ReportTable]:
    sets = list(dict.fromkeys(t.columns[j].eval_set for j in idx))
    short = set_labels(sets)
    out = []
    for metric in dict.fromkeys(t.columns[j].metric for j in idx):
        js = [j for j in idx if t.columns[j].metric == metric]
        label = metric_info(metric).label
        out.append(_slice(t, js, f"{prefix}{label}", {j: ("", short[t.columns[j].eval_set]) for j in js}))
    return out


def relayout(tables: list[ReportTable], layout: str) -> list[ReportTable]:
    """The tables of ``layout`` (one of LAYOUTS) from the per-group tables of ``build_tables``."""
    out: list[ReportTable] = []
    for t in tables:
        kind = layout_for(t.key, layout)
        every = list(range(len(t.columns)))
        sets = list(dict.fromkeys(c.eval_set for c in t.columns))
        if kind == "group" or len(sets) == 1:  # one set: every layout but group is methods x metrics
            out.append(t if kind == "group" else _slice(t, every, ""))
        elif kind == "metrics":
            for s in sets:
                out.append(_slice(t, [j for j in every if t.columns[j].eval_set == s], short_set(s)))
        elif kind == "sets":
            out.extend(_by_metric(t, every))
        else:  # severity
            families: dict[tuple[str, str], list[str]] = {}
            for s in sets:
                sev = numeric_severity(s)
                if sev is not None:
                    families.setdefault(sev[:2], []).append(s)
            families = {k: v for k, v in families.items() if len(v) > 1}
            in_family = {s for v in families.values() for s in v}
            for (fam, axis), members in families.items():
                members = sorted(members, key=lambda s: numeric_severity(s)[2])
                for metric in dict.fromkeys(t.columns[j].metric for j in every):
                    js = [j for s in members for j in every
                          if t.columns[j].eval_set == s and t.columns[j].metric == metric]
                    if js:
                        labels = {j: ("", f"{numeric_severity(t.columns[j].eval_set)[2]:g}") for j in js}
                        out.append(_slice(t, js, f"{fam} by {axis}, {metric_info(metric).label}", labels))
            rest = [j for j in every if t.columns[j].eval_set not in in_family]
            if rest:
                out.extend(_by_metric(t, rest, "other sets, " if families else ""))
    return out

