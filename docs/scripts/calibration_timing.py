"""Seconds to fit each calibration map on the validation split's logits, and to apply it to the MNIST test set's
10,000 logits, beside msp's softmax (CPU, one thread, best of ``--repeats``). The baseline comes from a finished run
(``msp`` must be in it); nothing is trained.

    python docs/scripts/calibration_timing.py RUN [--methods temperature,vector,...] [--repeats 3]

docs/calibration.md records a result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.datasets.evalsets import EvalContext, build
from bench.datasets.source import embedded
from bench.datasets.splits import SplitSpec, split
from bench.methods import METHODS
from bench.run.loading import load_method

CALIBRATORS = "temperature,vector,matrix,dirichlet,histbin,isotonic"


def best(fn, repeats: int) -> float:
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--methods", default=CALIBRATORS)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.loads((Path(args.run) / "manifest.json").read_text())["config"]
    _, val = split(embedded("mnist").part("train"), SplitSpec(**cfg["split"]))
    msp = load_method(args.run, "msp")
    val_logits, labels = msp.logits(val.images), val.labels
    test_logits = msp.logits(build("mnist", EvalContext()).images)
    base = best(lambda: msp.score_logits(test_logits), args.repeats)
    print(f"msp: softmax of {len(test_logits)} test logits {1000 * base:.1f} ms")
    for name in args.methods.split(","):
        m = METHODS.get(name)()
        if name == "temperature":  # fitted inside _fit; the same routine on the same logits
            from bench.methods.temperature import fit_temperature

            fit = best(lambda: m.load_extra_state({"temperature": fit_temperature(val_logits, labels)}), args.repeats)
        else:
            fit = best(lambda: m._fit_logits(val_logits, labels), args.repeats)
        apply = best(lambda: m.score_logits(test_logits), args.repeats)
        print(f"{name}: fit on {len(labels)} validation logits {fit:.2f} s; apply to {len(test_logits)} test "
              f"logits {1000 * apply:.1f} ms ({apply / base:.1f}x msp's softmax)")


if __name__ == "__main__":
    main()
