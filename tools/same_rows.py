"""Do two runs give the same results? Compares the results.csv of two run directories cell by cell, exactly, on
every metric except the measured costs (wall times, inference time, peak memory), which differ run to run.

    python tools/same_rows.py /tmp/before /tmp/after

Prints each row that differs (or exists in one run only) and exits 1 if any does; used to check that a refactor
moves no result (issue 18's smoke-grid comparison).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

#: measured costs: they vary between any two runs of the same code
TIMING = {"infer_ms_per_1k", "first_epoch_sec", "sec_per_epoch", "train_sec_total", "peak_rss_mb",
          "peak_cuda_mem_mb"}
KEY = ("method", "backbone", "seed", "fold", "eval_set", "shift", "severity", "metric")


def rows(run: Path) -> dict[tuple[str, ...], str]:
    with open(run / "results.csv", newline="") as f:
        return {tuple(r[k] for k in KEY): r["value"] for r in csv.DictReader(f) if r["metric"] not in TIMING}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tools/same_rows.py RUN_A RUN_B", file=sys.stderr)
        return 2
    a, b = (rows(Path(p)) for p in argv)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    for k in differ:
        print(" ".join(x for x in k if x), ":", a.get(k, "(missing)"), "->", b.get(k, "(missing)"))
    print(f"{len(a)} vs {len(b)} non-timing rows; {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
