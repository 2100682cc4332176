"""The PMNIST table of docs/missingfeature.md from bench runs of msp,missingfeature: per test set, standard (msp) and
inverted (missingfeature) accuracy mean +- std over seeds, the paired gain mean +- std [min, max], and per-seed
values. Usage: python tools/pmnist_table.py RUN_DIR [RUN_DIR ...] (each a run of one variant; rows are pooled)."""
import csv
import statistics
import sys
from pathlib import Path

SETS = ["mnist", "pmnist:horizontal", "pmnist:vertical", "pmnist:diagonal", "pmnist:triple"]
acc: dict[tuple[str, str], dict[int, float]] = {}
for run in sys.argv[1:]:
    with open(Path(run) / "results.csv") as f:
        for r in csv.DictReader(f):
            if r["metric"] == "accuracy" and r["eval_set"] in SETS:
                acc.setdefault((r["method"], r["eval_set"]), {})[int(r["seed"])] = float(r["value"])


def ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"


print("| test set | standard (msp) | inverted | gain, mean +- std [min, max] | per seed (standard / inverted) |")
print("|---|---|---|---|---|")
for s in SETS:
    a, b = acc.get(("msp", s), {}), acc.get(("missingfeature", s), {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        continue
    g = [b[k] - a[k] for k in seeds]
    per = ", ".join(f"{a[k]:.2f}/{b[k]:.2f}" for k in seeds)
    print(f"| {s} | {ms([a[k] for k in seeds])} | {ms([b[k] for k in seeds])} | "
          f"{statistics.mean(g):+.2f} +- {statistics.stdev(g) if len(g) > 1 else 0:.2f} [{min(g):+.2f}, {max(g):+.2f}] "
          f"| {per} (seeds {','.join(map(str, seeds))}) |")
