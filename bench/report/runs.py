"""Reading finished runs for reports: ``load_run`` reads and checks one run directory, ``load_runs`` combines several
(missing, partial or incompatible runs are one-line ``UsageError``s) into a ``RunSet`` of tidy rows.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError, UsageError
from bench.report.groups import COST_SET, declared_group
from bench.run.result_keys import CELL_KEYS, PLACEMENT_KEYS, with_added
from bench.run.store import ROW_FIELDS, cell_key


@dataclass
class RunSet:
    rows: pd.DataFrame  # tidy rows of every run, ROW_FIELDS plus ``group`` (near/far for OOD sets)
    manifests: dict[str, dict[str, Any]]  # run_id -> manifest
    dirs: dict[str, Path]  # run_id -> directory
    ood_groups: dict[str, str] = field(default_factory=dict)  # eval set -> near | far | ""

    def prediction(self, run_id: str, method: str, seed: int, fold: int, eval_set: str) -> Path:
        return self.dirs[run_id] / "predictions" / f"{cell_key(method, seed, fold, eval_set)}.npz"

    @property
    def device_names(self) -> list[str]:
        return sorted({str(m.get("device_name", "unknown")) for m in self.manifests.values()})


# Config keys that may differ between runs combined in one report: where they ran, and which cells they hold (each
# cell once); method options are checked per method, below. Every other key determines results and must agree.
FREE_KEYS = (*PLACEMENT_KEYS, *CELL_KEYS, "method_options")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{path} is corrupt (not JSON); {what}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def _expand(kind: str, names: list[str]) -> list[str] | None:
    """Registry expansion of a manifest's method / eval-set names; None when the registry no longer knows one."""
    try:
        if kind == "methods":
            from bench.methods import METHODS

            return METHODS.expand(list(names))
        from bench.datasets import evalsets

        if names:
            return evalsets.expand(list(names))
        from bench.datasets.benchmarks import run_defaults  # a run that lists no sets ran the mnist defaults
        from bench.datasets.source import embedded

        return run_defaults("mnist", embedded())
    except (BenchError, KeyError, ValueError):
        return None


def _expected_cells(manifest: dict[str, Any], rows: pd.DataFrame) -> set[tuple[str, int, int, str]]:
    if manifest.get("cells"):  # runs that list their cells (bench.evaluate: methods labelled by model; bench score)
        return {(str(m), int(s), int(f), str(ds)) for m, s, f, ds in manifest["cells"]}
    cfg = manifest.get("config", {})
    present = sorted(rows["method"].unique())
    methods = list(manifest.get("resolved_methods") or cfg.get("methods", []))
    if not methods or any(c in "".join(methods) for c in "*?["):  # the registry is imported only when needed
        # a run written before manifests kept the expansion: its wildcards matched the methods registered then,
        # which today's registry may exceed; the methods it holds rows of stand for them
        methods = [m for m in (_expand("methods", methods) or present) if m in present]
    listed = list(manifest.get("eval_set_groups") or cfg.get("datasets") or [])
    if not listed or not set(listed) <= set(rows["eval_set"]):  # families and wildcards need the registry
        listed = (_expand("datasets", listed) if listed else None) or sorted(set(rows["eval_set"]) - {COST_SET})
    sets = listed
    seeds = list(cfg.get("seeds", sorted(rows["seed"].unique())))
    folds = range(int(cfg.get("folds", 1)))
    return {(m, int(s), f, ds) for m in methods for s in seeds for f in folds for ds in [*sets, COST_SET]}


def load_run(path: str | Path, allow_partial: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and manifest of one finished run directory; one-line UsageError when it is missing or partial."""
    p = Path(path)
    if p.is_file():  # a results CSV is read elsewhere (its suffix); any other file is not a run
        raise UsageError(f"{p} is a file, not a run directory; give a folder made by `bench run` or a report CSV")
    if not p.is_dir():
        raise UsageError(f"run directory {p} does not exist")
    if not (p / "manifest.json").is_file():
        raise UsageError(f"{p} is not a run directory (no manifest.json); give a directory made by `bench run`")
    manifest = _read_json(p / "manifest.json", "start a new run")
    cells = sorted((p / "cells").glob("*.json")) if (p / "cells").is_dir() else []
    if not cells:
        raise UsageError(f"{p} has no finished cells; run it first (python -m bench run ... --out {p})")
    rows: list[dict[str, Any]] = []
    for c in cells:
        data = _read_json(c, f"delete it and finish the run with --resume --out {p}")
        if not isinstance(data, list):
            raise UsageError(f"{c} is malformed (expected a list of rows)")
        for r in data:
            missing = [f for f in ROW_FIELDS if not isinstance(r, dict) or f not in r]
            if missing:
                raise UsageError(f"{c} is malformed (a row lacks {missing[0]!r}); it was not written by this bench")
        rows.extend(data)
    df = pd.DataFrame(rows, columns=list(ROW_FIELDS))
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["seed"] = df["seed"].astype(int)
    df["fold"] = df["fold"].astype(int)
    df["severity"] = df["severity"].fillna("").astype(str)
    df["run_id"] = p.name
    if not allow_partial:
        done = set(zip(df["method"], df["seed"], df["fold"], df["eval_set"]))
        missing_cells = sorted(_expected_cells(manifest, df) - done)
        if missing_cells:
            m, s, f, ds = missing_cells[0]
            expected = len(_expected_cells(manifest, df))
            why = " (see errors.json)" if (p / "errors.json").exists() else ""
            raise UsageError(f"{p} is partial: {len(missing_cells)} of {expected} cells missing{why}, e.g. {m} "
                             f"seed {s} fold {f} {ds}; finish it with "
                             f"`python -m bench run --resume --out {shlex.quote(str(p))}` or pass "
                             "--allow-partial")
    return df, manifest


def _ood_group(name: str, manifest: dict[str, Any]) -> str:
    """near | far | '' for an OOD set: from the manifest when the run recorded it, else as its family declares it
    (bench/report/groups.py); '' when neither knows."""
    info = (manifest.get("eval_set_groups") or {}).get(name)
    if isinstance(info, dict) and info.get("group"):
        return str(info["group"])
    declared = declared_group(name)
    return declared.removeprefix("ood-") if declared in ("ood-near", "ood-far") else ""


def load_runs(paths: list[str | Path], allow_partial: bool = False) -> RunSet:
    """Several runs combined: they must agree on everything that shapes results (backbone, recipe, split, eval
    settings, folds, profile) and may differ in methods, seeds and eval sets; no cell may appear twice."""
    if not paths:
        raise UsageError("give at least one run directory")
    frames: list[pd.DataFrame] = []
    manifests: dict[str, dict[str, Any]] = {}
    dirs: dict[str, Path] = {}
    for path in paths:
        df, manifest = load_run(path, allow_partial)
        rid = Path(path).name
        if rid in manifests:
            raise UsageError(f"run {rid} is given twice ({dirs[rid]} and {path}); each run once")
        manifests[rid], dirs[rid] = manifest, Path(path)
        frames.append(df)
    first = next(iter(manifests))
    # rows of user models (bench.evaluate) carry the model in their method label, so the backbone may differ
    free = FREE_KEYS + (("backbone",) if any(m.get("user_models") for m in manifests.values()) else ())
    base_cfg = {k: v for k, v in with_added(manifests[first].get("config", {})).items() if k not in free}
    for rid, m in manifests.items():
        cfg = {k: v for k, v in with_added(m.get("config", {})).items() if k not in free}
        for key in sorted(set(base_cfg) | set(cfg)):
            if base_cfg.get(key) != cfg.get(key):
                raise UsageError(f"runs {first} and {rid} are incompatible: {key} differs ({base_cfg.get(key)!r} vs "
                                 f"{cfg.get(key)!r}); report them separately")
    options: dict[str, tuple[str, Any]] = {}
    for rid, m in manifests.items():
        for meth, opts in (m.get("config", {}).get("method_options") or {}).items():
            if meth in options and options[meth][1] != opts:
                raise UsageError(f"runs {options[meth][0]} and {rid} are incompatible: {meth} options differ "
                                 f"({options[meth][1]} vs {opts}); report them separately")
            options.setdefault(meth, (rid, opts))
    rows = pd.concat(frames, ignore_index=True)
    dup = rows.duplicated(["method", "seed", "fold", "eval_set", "metric"], keep=False)
    if dup.any():
        r = rows[dup].iloc[0]
        owners = sorted(rows[dup & (rows["method"] == r["method"]) & (rows["seed"] == r["seed"])]["run_id"].unique())
        raise UsageError(f"{r['method']} seed {r['seed']} fold {r['fold']} {r['eval_set']} appears in more than one "
                         f"run ({', '.join(owners)}); give each cell once")
    groups = {}
    for name in rows.loc[rows["shift"] == "ood", "eval_set"].unique():
        rid = rows.loc[rows["eval_set"] == name, "run_id"].iloc[0]
        groups[name] = _ood_group(name, manifests[rid])
    rows["group"] = [groups.get(e, "") for e in rows["eval_set"]]
    return RunSet(rows, manifests, dirs, groups)
