"""``python -m bench run``: train (or load cached) methods and evaluate them, or score your own models
(``--model``, bench/commands/run_models.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.commands.args import DEVICE_HELP, jobs, parse_seeds, profile_help, split_names, split_sets
from bench.errors import UsageError

DEFAULT_RUNS = Path("results/runs")


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train (or load cached) methods and evaluate them")
    run.add_argument("--methods", help="comma-separated names or wildcards (default from profile: msp)")
    run.add_argument("--backbone", help="registered backbone or timm:<model>")
    run.add_argument("--benchmark", help="a declared benchmark: its data and default eval sets (default mnist; "
                     "python -m bench list benchmarks)")
    run.add_argument("--datasets", help="eval sets (default: the benchmark's test set + its OOD sets available "
                     "offline)")
    run.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--folds", type=int, help="k-fold cross-validation over the 60k training images")
    run.add_argument("--profile", help=f"{profile_help()}; with --resume: the run's own config")
    run.add_argument("--config", type=Path, help="YAML file of config keys (applied over the profile)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one key, e.g. --set train.epochs=5 --set mcdropout.passes=20")
    run.add_argument("--device", help=DEVICE_HELP)
    run.add_argument("--out", type=Path, help="run directory (default results/runs/<timestamp>)")
    run.add_argument("--resume", action="store_true",
                     help="continue a run: skip finished cells, continue cut-off trainings from their last epoch "
                     "(default: latest)")
    run.add_argument("--retrain", action="store_true",
                     help="ignore cached checkpoints (and saved epochs) and train again")
    run.add_argument("--data-dir", help="where downloadable eval sets live (default $BENCH_DATA or ./data)")
    run.add_argument("--cache-dir", help="checkpoint cache (default results/cache)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--ood", action="append", default=[], metavar="NAME=PATH",
                     help="add a user OOD set ood:NAME from a folder of images, an .npz or an IDX file (repeatable)")
    run.add_argument("--data", metavar="NAME=PATH",
                     help="your own labelled dataset instead of MNIST: an .npz, IDX files IMAGES,LABELS or a folder of "
                          "class subfolders (docs/your-data.md)")
    run.add_argument("--ood-resize", action="store_true",
                     help="with --data: resize --ood sets of another shape to the data's (else they are refused)")
    run.add_argument("--tensorboard", action="store_true",
                     help="write per-epoch scalars live to <run>/tensorboard (needs the tensorboard extra)")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="where the grid's units run: local (default) or ray (needs the ray extra)")
    run.add_argument("--jobs", type=jobs, help="local executor: worker processes; 1 = in this process; default auto: "
                     "one single-thread worker per core on a CPU (1 when the grid has one unit), one per GPU")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="ray executor: cluster address, e.g. ray://head:10001 (default: a local Ray instance)")
    run.add_argument("--model", action="append", default=[], metavar="PATH",
                     help="score your own trained model instead of training: a TorchScript file, a torch.export "
                          "archive, or file.py:Class / package.module:factory with --weights (repeatable; "
                          "docs/byom.md)")
    run.add_argument("--weights", action="append", default=[], metavar="FILE",
                     help="state dict for each file.py:Class / package.module:factory --model, in order")
    run.add_argument("--model-name", action="append", default=[], metavar="NAME",
                     help="name of each --model in the rows (default: the file's stem)")
    run.add_argument("--feature-layer", metavar="NAME",
                     help="--model: submodule whose output is the penultimate features (when the model has no "
                          "forward_features/forward_head)")

    run.set_defaults(handler=run_command)


def _resumed_config(args: argparse.Namespace, run_dir: Path) -> dict[str, Any] | None:
    """With --resume, the run's own resolved config (from its manifest) as the first layer, so that
    ``bench run --resume --out RUN`` continues a run as typed; flags given with it still apply on top (and a
    change to what determines results is refused by the runner)."""
    from bench.run.store import RunStore

    if not args.resume:
        return None
    manifest = RunStore(run_dir).read_manifest()
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict):
        return None
    layer = {k: v for k, v in config.items() if k != "method_options"}
    layer.update({m: dict(o) for m, o in (config.get("method_options") or {}).items()})
    return layer


def _layers(args: argparse.Namespace, run_dir: Path | None = None) -> list[dict[str, Any]]:
    from bench.config import load_profile, load_yaml, parse_set

    resumed = _resumed_config(args, run_dir) if run_dir is not None else None
    layers = [resumed] if resumed is not None else []
    if resumed is None or args.profile is not None:
        layers.append(load_profile(args.profile if args.profile is not None else "quick"))
    if args.config is not None:
        layers.append(load_yaml(args.config, "--config"))
    flags: dict[str, Any] = {}
    if args.methods is not None:
        flags["methods"] = split_names(args.methods)
        if not flags["methods"]:
            raise UsageError(f"--methods {args.methods!r} names no method; e.g. --methods msp,mcdropout")
    if args.backbone is not None:
        flags["backbone"] = args.backbone
    if args.benchmark is not None:
        flags["benchmark"] = args.benchmark
    if args.datasets is not None:
        flags["datasets"] = split_sets(args.datasets)
        if not flags["datasets"]:  # an empty list would silently mean the default sets
            raise UsageError(f"--datasets {args.datasets!r} names no eval set; e.g. --datasets mnist,ood:fashion, "
                             "or leave it out for the default sets")
    if args.seeds is not None:
        flags["seeds"] = parse_seeds(args.seeds)
    if args.folds is not None:
        flags["folds"] = args.folds
    if args.device is not None:
        flags["device"] = args.device
    data_dir = args.data_dir or os.environ.get("BENCH_DATA")
    if data_dir:
        flags["data_dir"] = data_dir
    if args.cache_dir is not None:
        flags["cache_dir"] = args.cache_dir
    if args.ood:
        flags["ood"] = list(args.ood)
    if args.data is not None:
        flags["data"] = args.data
    if args.ood_resize:
        flags["ood_resize"] = True
    executor = {k: v for k, v in (("kind", args.executor), ("jobs", args.jobs), ("address", args.ray_address))
                if v is not None}
    if executor:
        flags["executor"] = executor
    layers.append(flags)
    layers.append(parse_set(args.set))
    return layers


def _run_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        # never a fresh default run in the place of one the user meant to resume (a run killed before it wrote its
        # manifest still holds bench's own entries, and resumes; a folder of other files is refused when prepared)
        if args.resume and (not args.out.is_dir() or not any(args.out.iterdir())):
            what = "does not exist" if not args.out.exists() else "is empty" if args.out.is_dir() else "is a file"
            raise UsageError(f"--resume --out {args.out}: nothing to resume, the folder {what}; drop --resume to "
                             "start a new run there")
        return args.out
    if args.resume:
        runs = sorted(p for p in DEFAULT_RUNS.glob("*") if (p / "manifest.json").exists()) if DEFAULT_RUNS.is_dir() \
            else []
        if not runs:
            raise UsageError(f"--resume: no run to resume in {DEFAULT_RUNS}; give --out DIR")
        return runs[-1]
    return DEFAULT_RUNS / time.strftime("%Y%m%d-%H%M%S")


def run_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.config import resolve
    from bench.methods import METHODS
    from bench.methods.core.backbones import BACKBONES
    from bench.report.outcome import report_outcome
    from bench.run.runner import Runner

    run_dir = _run_dir(args)
    if not args.model and (args.weights or args.model_name or args.feature_layer):
        raise UsageError("--weights, --model-name and --feature-layer go with --model PATH")
    if args.model:  # the user's own models (bench/commands/run_models.py)
        from bench.commands.run_models import run_models

        return run_models(args, _layers(args, run_dir), run_dir, out, err)
    cfg = resolve(_layers(args, run_dir), {name: METHODS.get(name).Config for name in METHODS.names()})
    if not cfg.backbone.startswith("timm:"):
        BACKBONES.get(cfg.backbone)
    runner = Runner(cfg, run_dir, resume=args.resume, retrain=args.retrain, console=err,
                    command=[sys.executable, "-m", "bench", *sys.argv[1:]],
                    progress=not args.no_progress, tensorboard=args.tensorboard)
    try:
        outcome = runner.run()
    except KeyboardInterrupt:
        done = len(list(runner.store.cells.glob("*.json")))
        err.print(f"interrupted: {done} finished cells kept in {run_dir}; continue with: python -m bench run "
                  f"--resume --out {shlex.quote(str(run_dir))}", highlight=False, soft_wrap=True, markup=False)
        return 130
    return report_outcome(outcome, out, err)
