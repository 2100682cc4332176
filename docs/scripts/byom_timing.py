"""Side by side, in one process: the evaluation of msp, energy, mcdropout and trustscore inside ``bench run`` (warm
checkpoint cache: nothing is trained) against ``bench.evaluate`` on the same lenet weights, over MNIST test and the
offline OOD sets (``--max-eval N``: the first N images of each; 0 = the full 10k). Runs alternate (run, evaluate,
run, evaluate, ...) so that load drifts hit both.

    python docs/scripts/byom_timing.py [--repeats 3] [--profile smoke] [--max-eval 0]

Prints each pair's seconds and the ratio of the sums (evaluate / run). docs/byom.md records a result.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import bench
from bench.cli import main
from bench.methods.core.backbones import create_backbone

METHODS = "msp,energy,mcdropout,trustscore"


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    code = main(args)
    assert code == 0, args
    return time.perf_counter() - t0


def timed_evaluate(model: torch.nn.Module, profile: str, opts: dict) -> float:
    t0 = time.perf_counter()
    bench.evaluate(model, methods=METHODS.split(","), profile=profile, device="cpu", options=opts, names="lenet")
    return time.perf_counter() - t0


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--max-eval", type=int, default=0)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="byom-timing-"))
    opts = {"eval.max_eval": a.max_eval}
    common = ["run", "--profile", a.profile, "--methods", METHODS, "--device", "cpu", "--no-progress",
              "--set", f"eval.max_eval={a.max_eval}", "--cache-dir", str(root / "cache")]
    run([*common, "--out", str(root / "warm")])  # trains the baseline and fits trustscore once (cached)
    entry = json.loads((root / "warm" / "checkpoints.json").read_text())["msp__seed0__fold0"]
    lenet = create_backbone("lenet")
    lenet.load_state_dict(torch.load(entry["path"], weights_only=True)["state"]["model"])
    timed_evaluate(lenet, a.profile, {"eval.max_eval": 100})  # warm-up of the evaluate path (imports)
    pairs = []
    for i in range(a.repeats):
        t_run = run([*common, "--out", str(root / f"run{i}")])
        t_eval = timed_evaluate(lenet, a.profile, opts)
        pairs.append((t_run, t_eval))
        print(f"pair {i}: bench run {t_run:.2f} s, bench.evaluate {t_eval:.2f} s, ratio {t_eval / t_run:.3f}",
              flush=True)
    ratio = sum(e for _, e in pairs) / sum(r for r, _ in pairs)
    print(f"ratio of sums (evaluate / run): {ratio:.3f} over {a.repeats} pairs; torch threads "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    cli()
