"""Count the † cells (not significantly different from the best) of a report CSV, per table column.

A leaderboard whose cells mostly carry † does not tell methods apart; this gives the count before and after a change
of protocol (more seeds, whole test sets) in one command:

    python tools/dagger_count.py results/leaderboard.csv                       # the id and near-OOD tables
    python tools/dagger_count.py results/leaderboard.csv --groups '*'          # every table
    python tools/dagger_count.py results/leaderboard.csv --alpha 0.01          # marks re-read from p_holm

A cell is counted as † when it is not the column's best and its Holm-adjusted p-value is >= alpha (the rule of
bench/report/from_csv.py); the best cell itself is counted apart. Count rows (n_images, n_errors) are skipped.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import sys
from pathlib import Path

#: the misclassification columns of the in-distribution table, and every column of the near-OOD table
DEFAULT_GROUPS = ("id", "ood-near")
ID_METRICS = ("auroc", "aurc")
SKIP = ("n_images", "n_errors")


def count(path: Path, groups: list[str], alpha: float | None) -> list[tuple[str, str, str, int, int]]:
    """(group, eval set, metric, † cells, methods) per column, in the CSV's order."""
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] not in SKIP]
    out: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        if not any(fnmatch.fnmatch(r["group"], g) for g in groups):
            continue
        if groups == list(DEFAULT_GROUPS) and r["group"] == "id" and r["metric"] not in ID_METRICS:
            continue
        if alpha is None:
            tied = r["not_worse_than_best"] == "1"
        else:
            p = float(r["p_holm"]) if r["p_holm"].strip() else math.nan
            tied = math.isfinite(p) and p >= alpha
        tied = tied and r["best"] != "1"
        n = out.setdefault((r["group"], r["eval_set"], r["metric"]), [0, 0])
        n[0] += int(tied)
        n[1] += 1
    return [(*k, v[0], v[1]) for k, v in out.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, help="a report CSV (bench report RUN --out x.csv)")
    ap.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                    help="table groups or wildcards (default id,ood-near: id's AUROC and AURC columns, every "
                    "near-OOD column; with other groups every column of them)")
    ap.add_argument("--alpha", type=float, help="re-read the marks from p_holm at this level (default: the CSV's)")
    args = ap.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    counted = count(args.csv, groups, args.alpha)
    if not counted:
        print(f"{args.csv}: no column of the groups {', '.join(groups)}", file=sys.stderr)
        return 2
    print(f"{args.csv}: † cells (not significantly different from the best, best excluded)")
    print(f"{'group':10} {'eval set':24} {'metric':12} {'†':>4} {'methods':>8}")
    for group, eval_set, metric, tied, n in counted:
        print(f"{group:10} {eval_set:24} {metric:12} {tied:>4} {n:>8}")
    by_group: dict[str, list[int]] = {}
    for group, _, _, tied, n in counted:
        t = by_group.setdefault(group, [0, 0])
        t[0] += tied
        t[1] += n
    for group, (tied, n) in by_group.items():
        print(f"total {group}: {tied} of {n} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
