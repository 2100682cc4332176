"""Provenance of a run: package versions, the git commit, and the run directory's manifest.

``prepare_store`` makes (or, with ``--resume``, reopens) a run directory: it refuses a folder that is not a bench
run, a finished run without ``--resume``, and a resume whose result-determining config differs from the run's
(``bench.run.result_keys``), then writes the manifest (resolved config, command, versions, git sha, device).
"""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.config import RunConfig
from bench.errors import UsageError
from bench.run.result_keys import result_config
from bench.run.store import RunStore
from bench.utils import device_name, to_jsonable

PACKAGES = ("torch", "torchvision", "timm", "torchattacks", "numpy", "scikit-learn", "pandas", "rich", "pyyaml")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_sha() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                           text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "") if r.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def mixed_code(bench_dir: Path, methods_dir: Path, datasets_dir: Path) -> str:
    """'' when bench's three packages come from one copy of the code: installed (methods/ and datasets/ inside
    bench/) or a checkout (beside it); else a one-line reason. How it happens: ``python -m bench`` run in one checkout
    imports that checkout's bench/, while a venv made by ``pip install -e`` in another maps bench.methods and
    bench.datasets to that other checkout, so the run's git sha would name code that did not run."""
    homes = {bench_dir.resolve(), bench_dir.resolve().parent}
    strays = [(n, d) for n, d in (("methods", methods_dir), ("datasets", datasets_dir))
              if d.resolve().parent not in homes]
    if not strays:
        return ""
    name, where = strays[0]
    return (f"bench's code comes from two places: bench/ from {bench_dir.resolve().parent}, its {name}/ from "
            f"{where.resolve().parent} (a venv installed with `pip install -e` in another checkout); run from that "
            f"checkout, or `pip install -e .` in this one")


def check_one_copy() -> None:
    """Refuse a run whose code is mixed from two checkouts (``mixed_code``): its manifest could not say what ran."""
    import bench.datasets
    import bench.methods

    bench_dir = Path(__file__).resolve().parents[1]  # bench/run/provenance.py; no `import bench`: a cycle
    reason = mixed_code(bench_dir, *(Path(m.__file__).parent for m in (bench.methods, bench.datasets)))
    if reason:
        raise UsageError(reason)


def first_difference(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    """The first key (dotted, in sorted order) whose value differs between two nested configs, as a readable
    'key: old in the run, new now'; '' when they agree."""
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = first_difference(va, vb, f"{prefix}{k}.")
            if d:
                return d
        elif va != vb:
            return f"{prefix}{k}: {va!r} in the run, {vb!r} now"
    return ""


def manifest_base(store: RunStore, config: dict[str, Any], command: list[str], device: torch.device | str,
                  device_label: str | None = None, created: str | None = None) -> dict[str, Any]:
    """The provenance every run directory's manifest records, whichever command wrote it (bench run, score,
    transfer, uap-sweep): run id, resolved config, command line, versions, git sha, device and when it was made."""
    name = device_label or (device if isinstance(device, str) else device_name(device))  # str: no device at all
    return {"run_id": store.run_id, "config": config, "command": command, "versions": versions(),
            "git_sha": git_sha(), "device": device_label or str(device), "device_name": name,
            "created": created or time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def prepare_store(cfg: RunConfig, run_dir: Path, resume: bool, command: list[str], device: torch.device,
                  device_label: str | None = None) -> RunStore:
    store = RunStore(run_dir)
    foreign = store.foreign_entry()
    if foreign is not None:
        raise UsageError(f"--out {run_dir} is a folder that is not a bench run (it holds {foreign}); bench will not "
                         "write over it: choose a new or empty folder")
    resolved = to_jsonable(cfg)
    resolved["method_options"] = {m: dict(o) for m, o in cfg.method_options}
    old = store.read_manifest()
    if store.has_results() and not resume:
        raise UsageError(f"{run_dir} already holds results; continue it with --resume or choose another --out")
    if resume and old is not None and result_config(old["config"]) != result_config(resolved):
        diff = first_difference(result_config(old["config"]), result_config(resolved))
        raise UsageError(f"cannot resume {run_dir} with a different config ({diff}); "
                         "drop --resume and choose another --out")
    store.ensure_writable()
    store.write_manifest({
        **manifest_base(store, resolved, command, device, device_label, (old or {}).get("created")),
        "resumed": bool(resume and old is not None),
        "eval_set_groups": (old or {}).get("eval_set_groups", {}),  # filled as units build sets
    })
    return store
