"""Every plot of a report (``bench report --plots DIR``): which plots ``--groups`` selects, and the files written.
The plots themselves are in plots.py (one figure per kind) and reliability_diagrams.py (one diagram per method)."""

from __future__ import annotations

from pathlib import Path

from bench.report.groups import VIEWS, row_groups
from bench.report.plots import (
    check_available,
    plot_confidence_histograms,
    plot_cost,
    plot_reliability,
    plot_risk_coverage,
    plot_severity,
)
from bench.report.reliability_diagrams import plot_reliability_per_method
from bench.report.runs import RunSet
from bench.report.tables import select

# The report groups each plot belongs to, so `--groups` selects plots as it selects tables.
PLOT_GROUPS = {"risk_coverage": {"id", "failure"}, "reliability": {"id"}, "confidence": {"ood-near", "ood-far", "ood"},
               "severity": {"occlusion", "adversarial"}, "cost": {"cost"}}


def write_plots(runs: RunSet, out_dir: Path, methods: list[str] | None = None,
                groups: list[str] | None = None) -> list[Path]:
    """Every plot the runs allow (only those of ``groups``, names or wildcards, when given); returns the files."""
    check_available()
    present = list(dict.fromkeys(runs.rows["method"]))
    chosen = select(methods, present, "method") if methods else present
    keep = set(PLOT_GROUPS)
    if groups:  # matched as the tables match them
        in_runs = sorted(set(row_groups(runs.rows)) | set(VIEWS))  # the views' names too (their tables exist)
        wanted = set(select(groups, in_runs, "group"))
        keep = {k for k, gs in PLOT_GROUPS.items() if gs & wanted}
    paths: list[Path] = []
    for name, fn in (("risk_coverage", plot_risk_coverage), ("reliability", plot_reliability),
                     ("confidence", plot_confidence_histograms), ("severity", plot_severity), ("cost", plot_cost)):
        if name in keep:
            paths += fn(runs, chosen, Path(out_dir))
    if "reliability" in keep:  # and one diagram per method, with its bins' counts
        paths += plot_reliability_per_method(runs, chosen, Path(out_dir))
    return paths
