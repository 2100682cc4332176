"""docs/guarantees.md's tables from a run made with ``--set eval.conformal=true``, and the cost of the conformal step.

    python docs/scripts/guarantees_table.py RUN [--repeats 5]

Prints (Markdown) the coverage of each score at each alpha on the in-distribution test set beside the finite-sample
bounds for the run's calibration size, the same on every other labelled set (MNIST-C as the mean over its
corruptions and its worst corruption), SGR's realised risk and coverage, and the wall time of
``bench.conformal.guarantee_metrics`` on one cell's stored arrays (calibration + test), post-hoc: no model runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import conformal as cp
from bench.run.store import RunStore, cell_key


def mean_std(v: pd.Series) -> str:
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = pd.read_csv(args.run / "results.csv")
    rows = rows[rows["metric"].str.startswith(("cp_", "sgr_"))]
    store = RunStore(args.run)
    methods = list(dict.fromkeys(rows["method"]))
    first = rows.iloc[0]
    cal = store.read_arrays(cell_key(first["method"], int(first["seed"]), int(first["fold"]), "calibration"))
    n = len(cal["labels"])
    print(f"calibration images per (method, seed): {n}\n")
    print("| alpha | lower bound k/(n+1) | upper bound 1-alpha+1/(n+1) |\n|--:|--:|--:|")
    for a in cp.ALPHAS:
        lo, hi = cp.coverage_bounds(n, a)
        print(f"| {a} | {lo:.2f} | {hi:.2f} |")

    def family(ds: str) -> str:
        return "mnistc (mean of 15)" if ds.startswith("mnistc:") else ds

    rows = rows.assign(family=rows["eval_set"].map(family))
    # MNIST-C: the per-seed mean over its corruptions, so the spread is over seeds as for the other sets
    per_seed = rows.groupby(["method", "seed", "family", "metric"], sort=False)["value"].mean().reset_index()
    sets = list(dict.fromkeys(per_seed["family"]))
    for metric_group, title in (("cov", "coverage %"), ("size", "mean set size")):
        for a in cp.ALPHAS:
            lv = int(round(100 * (1 - a)))
            print(f"\n{title} at alpha {a} (mean ± std over seeds)\n")
            print("| method | score | " + " | ".join(sets) + " |\n|:--|:--|" + "--:|" * len(sets))
            for m in methods:
                for s in cp.SCORES:
                    cells = []
                    for ds in sets:
                        v = per_seed[(per_seed["method"] == m) & (per_seed["family"] == ds)
                                     & (per_seed["metric"] == f"cp_{s}_{metric_group}{lv}")]["value"]
                        cells.append(mean_std(v))
                    print(f"| {m} | {s} | " + " | ".join(cells) + " |")
    worst = rows[rows["eval_set"].str.startswith("mnistc:") & rows["metric"].str.contains("_cov")]
    if not worst.empty:
        w = worst.groupby(["method", "metric", "eval_set"])["value"].mean().reset_index()
        w = w.loc[w.groupby(["method", "metric"])["value"].idxmin()]
        print("\nworst MNIST-C corruption (mean over seeds)\n\n| method | metric | corruption | coverage % |\n"
              "|:--|:--|:--|--:|")
        for r in w.itertuples():
            print(f"| {r.method} | {r.metric} | {r.eval_set} | {r.value:.2f} |")
    print(f"\nSGR at target risk {100 * cp.SGR_RISK:g}%, delta {cp.SGR_DELTA} (mean ± std over seeds)\n")
    print("| method | quantity | " + " | ".join(sets) + " |\n|:--|:--|" + "--:|" * len(sets))
    for m in methods:
        for q in ("sgr_risk", "sgr_coverage", "sgr_bound"):
            cells = [mean_std(per_seed[(per_seed["method"] == m) & (per_seed["family"] == ds)
                                       & (per_seed["metric"] == q)]["value"]) for ds in sets]
            print(f"| {m} | {q} | " + " | ".join(cells) + " |")

    # control: calibrate on a random half of the in-distribution test cell and measure on the other half (exchangeable
    # by construction), 50 splits per seed: the implementation should then sit on the bound
    id_set = next(ds for ds in rows["eval_set"] if (rows[rows["eval_set"] == ds]["metric"] == "cp_lac_cov90").any()
                  and ":" not in ds)
    rng = np.random.default_rng(0)
    print(f"\ncontrol: calibrated on a random half of {id_set}'s test images, measured on the other half "
          "(50 splits x seeds; mean ± standard error)\n")
    print("| method | " + " | ".join(f"{s} cov{int(round(100 * (1 - a)))}" for a in cp.ALPHAS for s in cp.SCORES)
          + " |\n|:--|" + "--:|" * (len(cp.ALPHAS) * len(cp.SCORES)))
    half = 0
    for m in methods:
        got: dict[tuple[float, str], list[float]] = {}
        for seed in sorted(set(rows[rows["method"] == m]["seed"])):
            a_ = store.read_arrays(cell_key(m, int(seed), 0, id_set))
            p, y = a_["probs"], a_["labels"]
            half = len(y) // 2
            for _ in range(50):
                idx = rng.permutation(len(y))
                for a in cp.ALPHAS:
                    for s in cp.SCORES:
                        c = cp.SplitConformal.calibrate(p[idx[:half]], y[idx[:half]], score=s, alpha=a)
                        got.setdefault((a, s), []).append(cp.coverage(c.sets(p[idx[half:]]), y[idx[half:]]))
        print(f"| {m} | " + " | ".join(f"{np.mean(v):.2f} ± {np.std(v, ddof=1) / np.sqrt(len(v)):.2f}"
                                       for v in got.values()) + " |")
    print("\nbounds for that calibration size: " + ", ".join(
        f"alpha {a}: [{cp.coverage_bounds(half, a)[0]:.2f}, {cp.coverage_bounds(half, a)[1]:.2f}]"
        for a in cp.ALPHAS))

    test = store.read_arrays(cell_key(first["method"], int(first["seed"]), int(first["fold"]), first["eval_set"]))
    cp.guarantee_metrics(cal["probs"], cal["labels"], cal["confidence"], test["probs"], test["labels"],
                         test["confidence"])  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cp.guarantee_metrics(cal["probs"], cal["labels"], cal["confidence"], test["probs"], test["labels"],
                             test["confidence"])
        times.append(time.perf_counter() - t0)
    print(f"\nconformal step (guarantee_metrics: 3 scores x {len(cp.ALPHAS)} alphas + SGR) on {n} calibration and "
          f"{len(test['labels'])} test images: {1000 * np.mean(times):.1f} ± {1000 * np.std(times, ddof=1):.1f} ms "
          f"over {args.repeats} repeats")


if __name__ == "__main__":
    main()
