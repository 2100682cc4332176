"""Rebuild a fitted method from a finished run: ``manifest.json`` (resolved config: backbone, method options) +
``checkpoints.json`` (which cached checkpoint holds each fitted (method, seed, fold)) + the checkpoint cache.

Used by ``python -m bench predict`` and the web page: ``load_method(run_dir, "trustgan")``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from bench.cache import CheckpointCache
from bench.errors import UsageError
from bench.methods.core.base import ConfidenceMethod


def resume_command(run_dir: str | Path) -> str:
    """The command that finishes or repairs a run as typed (it takes the run's config from its manifest)."""
    return f"python -m bench run --resume --out {shlex.quote(str(run_dir))}"


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise UsageError(f"{path} is missing: is {path.parent} a finished run directory (see --out of bench run)?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{path} is corrupt (not JSON); rerun the {what}") from None


def fitted_entries(run_dir: str | Path) -> list[dict]:
    """The fitted (method, seed, fold) entries of a run, sorted."""
    index = _read_json(Path(run_dir) / "checkpoints.json", "run")
    return sorted(index.values(), key=lambda e: (e["method"], e["seed"], e["fold"]))


def run_data(run_dir: str | Path) -> dict | None:
    """The manifest's ``data`` entry of a run made on a user's --data (None: an MNIST run)."""
    path = Path(run_dir) / "manifest.json"
    return _read_json(path, "run").get("data") if path.exists() else None


def load_method(run_dir: str | Path, method: str, seed: int | None = None, fold: int = 0,
                device: torch.device | str = "cpu") -> ConfidenceMethod:
    """The fitted ``method`` of the run in ``run_dir`` (``seed`` None: the smallest seed fitted for that fold),
    with its weights, extra state and training log, on ``device``."""
    from bench.methods import METHODS

    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json", "run")
    entries = [e for e in fitted_entries(run_dir) if e["method"] == method and e["fold"] == fold
               and (seed is None or e["seed"] == seed)]
    if not entries:
        have = ", ".join(f"{e['method']} seed {e['seed']} fold {e['fold']}" for e in fitted_entries(run_dir))
        want = f"{method}{'' if seed is None else f' seed {seed}'} fold {fold}"
        config = manifest.get("config", {})
        planned = method in (config.get("methods") or []) and (seed is None or seed in (config.get("seeds") or []))
        fix = f"; finish the run with: {resume_command(run_dir)}" if planned else ""
        raise UsageError(f"run {run_dir} has no fitted {want} (it has: {have or 'nothing'}){fix}")
    entry = entries[0]
    config = manifest["config"]
    options = dict(config.get("method_options", {}).get(method, {}))
    cls = METHODS.get(method)
    data = manifest.get("data")  # a run on the user's own --data: its classes and image shape
    m = cls(cls.Config(**options), backbone=config["backbone"], seed=entry["seed"],
            num_classes=data["num_classes"] if data else 10, shape=tuple(data["shape"]) if data else (1, 28, 28))
    path = Path(entry["path"])
    if not path.exists():  # the run moved with its cache: look in the cache dir named in the manifest
        path = CheckpointCache(config.get("cache_dir", "results/cache")).path(entry["key"])
    hit = CheckpointCache(path.parent).get(path.stem)
    if hit is None:
        raise UsageError(f"checkpoint {entry['path']} of {method} seed {entry['seed']} is missing or unreadable; "
                         f"restore it with: {resume_command(run_dir)}")
    return m.load_checkpoint(hit, device)
