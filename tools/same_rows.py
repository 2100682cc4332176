"""Do two runs give the same results? Compares the result rows of two run directories (their ``cells/*.json``,
so a run still in progress can be compared on the cells it has finished) exactly, on every metric except the
measured costs (wall times, inference time, peak memory), which differ run to run.

    python tools/same_rows.py /tmp/before /tmp/after

Prints each row that differs, exits 1 if any does, and says how many cells only one run has; used to check that a
refactor moves no result (issue 18's smoke-grid comparison).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.report.metric_facts import METRICS

#: measured costs (the metrics the regression gate never tracks): they vary between any two runs of the same code
TIMING = {name for name, info in METRICS.items() if not info.tracked}
KEY = ("method", "backbone", "seed", "fold", "eval_set", "shift", "severity", "metric")


def rows(run: Path) -> dict[str, dict[tuple[str, ...], float]]:
    """cell file name -> {row key: value} (timing rows left out)."""
    out = {}
    for cell in sorted((run / "cells").glob("*.json")):
        out[cell.name] = {tuple(str(r[k]) for k in KEY): r["value"] for r in json.loads(cell.read_text())
                          if r["metric"] not in TIMING}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tools/same_rows.py RUN_A RUN_B", file=sys.stderr)
        return 2
    a, b = (rows(Path(p)) for p in argv)
    both = sorted(a.keys() & b.keys())
    n_rows, differ = 0, 0
    for cell in both:
        ra, rb = a[cell], b[cell]
        n_rows += len(ra.keys() | rb.keys())
        for k in sorted(ra.keys() | rb.keys()):
            if ra.get(k) != rb.get(k):
                differ += 1
                print(" ".join(x for x in k if x), ":", ra.get(k, "(missing)"), "->", rb.get(k, "(missing)"))
    print(f"{len(both)} cells in both runs ({n_rows} non-timing rows): {differ} rows differ; cells only in the "
          f"first: {len(a.keys() - b.keys())}, only in the second: {len(b.keys() - a.keys())}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
