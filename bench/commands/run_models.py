"""``bench run --model PATH ...``: the user's own trained models through ``bench run``'s flags, runner and outputs
(bench/own/evaluate.py); several models give rows for each, ``--methods ensemble`` also one ensemble of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.errors import UsageError


def run_models(args: argparse.Namespace, layers: list[dict[str, Any]], run_dir: Path, out: Console,
               err: Console) -> int:
    from bench.own.evaluate import prepare, run
    from bench.own.model_files import is_python_spec, load_model
    from bench.report.outcome import report_outcome

    if args.backbone is not None:
        raise UsageError("--backbone and --model exclude each other: the model you bring is the network")
    if args.tensorboard or args.retrain:
        raise UsageError("--tensorboard and --retrain do not apply to --model (nothing of it is trained)")
    python_specs = [m for m in args.model if is_python_spec(m)]
    if args.weights and len(args.weights) != len(python_specs):
        raise UsageError(f"{len(args.weights)} --weights for {len(python_specs)} file.py:Class / "
                         "package.module:factory --model; give one --weights per such model, in order")
    if args.model_name and len(args.model_name) != len(args.model):
        raise UsageError(f"{len(args.model_name)} --model-name for {len(args.model)} --model; give one name per model")
    weights = iter(args.weights)
    loaded = [load_model(m, next(weights) if args.weights and is_python_spec(m) else None) for m in args.model]
    names = args.model_name or [m.name for m in loaded]
    if not args.model_name and len(set(names)) != len(names):
        raise UsageError(f"models {names} share a name; tell them apart with --model-name")
    cfg, adapted = prepare([m.module for m in loaded], names=names, feature_layer=args.feature_layer, layers=layers)
    for a, m in zip(adapted, loaded):
        a.origin = m.origin
    try:
        outcome = run(cfg, adapted, run_dir, resume=args.resume, progress=not args.no_progress, console=err,
                      command=[sys.executable, "-m", "bench", *sys.argv[1:]])
    except KeyboardInterrupt:
        err.print(f"interrupted: finished cells kept in {run_dir}; continue with the same command plus --resume "
                  f"--out {run_dir}", highlight=False, soft_wrap=True)
        return 130
    finally:
        for a in adapted:
            a.close()
    return report_outcome(outcome, out, err)
