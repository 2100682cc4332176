"""Which method rankings change between two leaderboards (e.g. the MNIST and the Fashion-MNIST worlds), from their
report CSVs (`bench report ... --out X.csv`):

    python tools/compare_worlds.py results/leaderboard.csv results/fashion/leaderboard.csv
    python tools/compare_worlds.py A.csv B.csv --groups id,ood-near --metrics auroc,aurc,ood_auroc --movers 3
    python tools/compare_worlds.py A.csv B.csv --names MNIST,Fashion-MNIST

Per table column present in both (same group, eval set and metric; the in-distribution set is matched whatever its
name, so "mnist" meets "fashion"), over the methods present in both: Spearman's rank correlation of the method means
and the methods whose rank moves most (rank 1 = best, by the metric's own direction); then per group the median and
lowest rho over its columns. Count rows are skipped.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import statistics
import sys
from pathlib import Path

from scipy.stats import rankdata, spearmanr

SKIP = ("n_images", "n_errors")


def columns(path: Path) -> dict[tuple[str, str, str], dict[str, tuple[float, bool]]]:
    """(group, eval set, metric) -> method -> (mean, higher is better); the id group's eval set is called "ID"."""
    out: dict[tuple[str, str, str], dict[str, tuple[float, bool]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["metric"] in SKIP or not row["mean"]:
                continue
            key = (row["group"], "ID" if row["group"] == "id" else row["eval_set"], row["metric"])
            out.setdefault(key, {})[row["method"]] = (float(row["mean"]), row["higher_is_better"] == "1")
    return out


def ranks(values: dict[str, tuple[float, bool]], methods: list[str]) -> dict[str, float]:
    """Rank 1 = best; ties share the mean rank."""
    sign = -1.0 if values[methods[0]][1] else 1.0
    return dict(zip(methods, rankdata([sign * values[m][0] for m in methods])))


def compare(a: Path, b: Path, groups: list[str], metrics: list[str], movers: int) -> list[dict]:
    ca, cb = columns(a), columns(b)
    rows = []
    for key in ca:
        if key not in cb or not any(fnmatch.fnmatch(key[0], g) for g in groups) \
                or not any(fnmatch.fnmatch(key[2], m) for m in metrics):
            continue
        methods = sorted(set(ca[key]) & set(cb[key]))
        if len(methods) < 3:
            continue
        ra, rb = ranks(ca[key], methods), ranks(cb[key], methods)
        xa, xb = [ra[m] for m in methods], [rb[m] for m in methods]
        # every method tied in a world: no ranking to compare (spearmanr would warn and give NaN)
        rho = spearmanr(xa, xb).statistic if len(set(xa)) > 1 and len(set(xb)) > 1 else float("nan")
        moved = sorted(methods, key=lambda m: (-abs(ra[m] - rb[m]), m))[:movers]
        rows.append({"group": key[0], "eval_set": key[1], "metric": key[2], "methods": len(methods), "rho": rho,
                     "movers": [(m, ra[m], rb[m]) for m in moved]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--groups", default="*", help="comma-separated groups or wildcards (default: all)")
    p.add_argument("--metrics", default="*", help="comma-separated metrics or wildcards (default: all)")
    p.add_argument("--movers", type=int, default=3, help="methods listed per column, largest rank change first")
    p.add_argument("--names", default="", help="the two boards' names, comma-separated (default: their paths)")
    args = p.parse_args(argv)
    names = args.names.split(",") if args.names else [str(args.a), str(args.b)]
    if len(names) != 2:
        print(f"error: --names takes two names separated by a comma, got {args.names!r}", file=sys.stderr)
        return 2
    for path in (args.a, args.b):
        if not path.is_file():
            print(f"error: {path} is not a file; give two report CSVs (bench report RUN --out X.csv)", file=sys.stderr)
            return 2
    rows = compare(args.a, args.b, args.groups.split(","), args.metrics.split(","), args.movers)
    print(f"| group | eval set | metric | methods | Spearman rho | largest rank changes ({names[0]} -> "
          f"{names[1]}) |\n|---|---|---|--:|--:|---|")
    for r in rows:
        moves = ", ".join(f"{m} {x:g} -> {y:g}" for m, x, y in r["movers"])
        print(f"| {r['group']} | {r['eval_set']} | {r['metric']} | {r['methods']} | {r['rho']:.2f} | {moves} |")
    # per group: how much the columns' rankings agree, in one line each
    print("\n| group | columns | median rho | lowest rho (column) |\n|---|--:|--:|---|")
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group and r["rho"] == r["rho"]]  # rho is NaN where all tie
        if not mine:
            print(f"| {group} | 0 | - | - |")
            continue
        low = min(mine, key=lambda r: r["rho"])
        print(f"| {group} | {len(mine)} | {statistics.median(r['rho'] for r in mine):.2f} | {low['rho']:.2f} "
              f"({low['eval_set']} {low['metric']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
