"""docs/guarantees.md's split of the MNIST test set into its two halves: split-conformal coverage, accuracy and the
median nonconformity 1 - p_y of each half, beside the calibration (validation) split's, from a run made with
``--set eval.conformal=true`` on the whole test set (no eval.max_eval cap).

    python docs/scripts/coverage_by_half.py RUN [--methods msp,temperature,mcdropout] [--set mnist]

MNIST's 10,000 test images are two halves drawn from two NIST partitions (Census Bureau employees and high-school
students; Yadav & Bottou, "Cold Case: The Lost MNIST Digits", NeurIPS 2019); a capped run (eval.max_eval=2000) scores
only the first 2,000, all from the first half. Reads the stored predictions; no model runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench import conformal as cp
from bench.errors import DataError
from bench.run.store import RunStore, cell_key

PARTS = {"all 10,000": slice(None), "first 2,000": slice(0, 2000), "first half": slice(0, 5000),
         "second half": slice(5000, None)}


def median_nonconformity(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.median(1.0 - probs[np.arange(len(labels)), labels]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--methods", default="msp,temperature,mcdropout")
    ap.add_argument("--set", default="mnist", help="the in-distribution test set's name in the run")
    args = ap.parse_args()
    store = RunStore(args.run)
    seeds = sorted({int(p.name.split("__seed")[1].split("__")[0]) for p in (args.run / "predictions").glob("*.npz")})
    print("| method | seed | part | accuracy % | median 1 - p_y | LAC 90 | APS 90 | LAC 95 | APS 95 |\n"
          "|:--|--:|:--|--:|--:|--:|--:|--:|--:|")
    for m in args.methods.split(","):
        for s in seeds:
            try:
                cal = store.read_arrays(cell_key(m, s, 0, "calibration"))
                test = store.read_arrays(cell_key(m, s, 0, args.set))
            except DataError:  # this (method, seed) is not in the run (yet): no predictions file
                continue
            sets = {}
            for score in ("lac", "aps"):
                for a in cp.ALPHAS:
                    q = cp.conformal_quantile(cp.conformity_scores(cal["probs"], cal["labels"], score), a)
                    sets[(score, a)] = cp.prediction_sets(test["probs"], q, score)
            print(f"| {m} | {s} | validation ({len(cal['labels']):,}) | "
                  f"{100 * (cal['probs'].argmax(1) == cal['labels']).mean():.2f} | "
                  f"{median_nonconformity(cal['probs'], cal['labels']):.2e} | | | | |")
            for part, sl in PARTS.items():
                y, p = test["labels"][sl], test["probs"][sl]
                covs = [cp.coverage(sets[(score, a)][sl], y) for a in cp.ALPHAS for score in ("lac", "aps")]
                print(f"| {m} | {s} | {part} | {100 * (p.argmax(1) == y).mean():.2f} | "
                      f"{median_nonconformity(p, y):.2e} | " + " | ".join(f"{c:.2f}" for c in covs) + " |")


if __name__ == "__main__":
    main()
