"""A tiny real run for the reliability tests (seconds on a CPU): two seeds of msp and energy (one shared baseline
per seed, so two units), MNIST test and uniform noise, 256 training images, 128 eval images."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

from bench.cli import main

TINY = ["run", "--profile", "smoke", "--methods", "msp,energy", "--seeds", "0,1", "--datasets", "mnist,ood:uniform",
        "--device", "cpu", "--no-progress", "--set", "split.max_train=256", "--set", "eval.max_eval=128",
        "--set", "eval.cost_images=64",
        "--jobs", "1"]  # in-process also in a child process: fault points count per process (workers: test_executors)
#: metrics that are wall-clock or memory measurements: they differ between any two runs
TIMED = ("sec", "ms", "seconds", "mem", "rss")


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` in this process, with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def tiny(run: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    return run_main([*TINY, "--out", str(run), "--cache-dir", str(cache), *extra])


def rows(run: Path) -> list[tuple[str, ...]]:
    """results.csv rows less the run id, timing values blanked (they are measurements, not results)."""
    with open(run / "results.csv") as f:
        out = []
        for r in csv.DictReader(f):
            timed = any(t in r["metric"] for t in TIMED)
            out.append(tuple(v if k != "value" or not timed else "<timed>" for k, v in r.items() if k != "run_id"))
    return sorted(out)


def indices(run: Path) -> dict[str, object]:
    """Every run-wide index, less what legitimately differs between two runs of one config (run id, command,
    creation time, resume flag)."""
    manifest = json.loads((run / "manifest.json").read_text())
    for k in ("run_id", "command", "created", "resumed"):
        manifest.pop(k, None)
    return {"checkpoints": json.loads((run / "checkpoints.json").read_text()),
            "errors": json.loads((run / "errors.json").read_text()) if (run / "errors.json").exists() else None,
            "manifest": manifest,
            "cells": sorted(p.name for p in (run / "cells").glob("*.json")),
            "predictions": sorted(p.name for p in (run / "predictions").glob("*.npz"))}


def random_images(n: int, seed: int):
    """``n`` random uint8 28x28 images with random labels 0-9, the same for the same seed."""
    import torch

    from bench.datasets.mnist import ImageSet

    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g))
