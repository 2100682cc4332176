"""``bench.rescore(run, methods)`` / ``bench rescore RUN --methods energy,maxlogit``: add post-hoc logit scorers to a
finished run from the logits its cells stored, without the model, the images or any inference.

Every cell of a run keeps the classifier's float32 logits beside the method's probabilities (bench/run/worker.py). A
post-hoc scorer of the shared baseline sees exactly those logits in a fresh run (they are computed once per eval
set and shared), so scoring the stored ones gives the same rows, bit for bit: the metric rows are recomputed by the
functions a run uses (bench/run/rows.py) and the eval set's own rows (robust accuracy, generation seconds, ...) are the
source cell's, as a fresh run would share them. Scorers that fit something on the training split (temperature, the
feature detectors) need the data and are refused. No cost cell is written: nothing was timed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.errors import UsageError
from bench.run.grid import COST_SET
from bench.run.rows import id_rows, ood_rows, tidy
from bench.run.store import ROW_FIELDS, RunStore, cell_key, read_predictions


def _label(method: str, model: str) -> str:
    return f"{method}@{model}" if model else method


def check_method(name: str) -> type:
    """The class of a method ``rescore`` can add (a logit scorer of the baseline that fits nothing), else a
    one-line UsageError saying why and what to run instead."""
    from bench.methods import METHODS
    from bench.methods.core.base import ConfidenceMethod

    cls = METHODS.get(name)  # unknown names raise with close matches
    if not cls.posthoc:
        raise UsageError(f"{name} has inference of its own, not a score of the stored logits; add it with "
                         f"`python -m bench run --resume --methods ... ,{name}`")
    if cls.uses_features or cls._fit is not ConfidenceMethod._fit:
        raise UsageError(f"{name} fits on the training split (not only the stored logits); add it with "
                         f"`python -m bench run --resume --methods ...,{name}`")
    return cls


def _source_cells(store: RunStore) -> dict[str, list[dict[str, Any]]]:
    """cell file stem -> rows, for every finished cell."""
    out = {}
    for path in sorted(store.cells.glob("*.json")):
        rows = store.read_cell(path)
        if rows:
            out[path.stem] = rows
    return out


def _pick_source(cells: dict[str, list[dict[str, Any]]], store: RunStore, source: str | None) -> str:
    """The method label whose stored logits are the baseline's: ``source``, else msp, else the first method of the
    run that shares the baseline (its logits are the plain baseline's)."""
    from bench.methods import METHODS
    from bench.methods.core.base import Training

    labels = sorted({r["method"] for rows in cells.values() for r in rows})
    if source is not None:
        if source not in labels:
            raise UsageError(f"--from {source}: the run has no cells of it (methods: {', '.join(labels)})")
        candidates = [source]
    else:
        candidates = sorted(labels, key=lambda m: (m.partition("@")[0] != "msp", labels.index(m)))
    for label in candidates:
        base = label.partition("@")[0]
        if base in METHODS and METHODS.get(base).training is Training.SHARED_BASELINE:
            return label
    if source is not None:
        raise UsageError(f"--from {source}: its network is not the shared baseline, so its logits are not the ones "
                         "post-hoc scorers read; name a method such as msp")
    raise UsageError(f"{store.dir} has no method that shares the baseline (msp, energy, ...); its logits are what "
                     "rescore reads")


def _id_set(groups: dict[str, dict[str, Any]]) -> str | None:
    ids = [n for n, g in groups.items() if g.get("kind") == "id" and g.get("shift") == "none"]
    return ids[0] if len(ids) == 1 else None


def rescore(run: str | Path, methods: list[str], source: str | None = None) -> pd.DataFrame:
    """Add ``methods`` (post-hoc logit scorers) to the run directory ``run`` from its stored logits; returns the
    rows written (cells the run already holds are kept as they are)."""
    from bench.methods import METHODS
    from bench.run.runlock import RunLock

    run_dir = Path(run)
    store = RunStore(run_dir)
    manifest = store.read_manifest() if (run_dir / "manifest.json").is_file() else None
    if manifest is None:
        raise UsageError(f"{run_dir} is not a run directory (no manifest.json); give a directory made by `bench run`")
    if not methods:
        raise UsageError("--methods is empty; name post-hoc scorers, e.g. --methods energy,maxlogit")
    names = list(dict.fromkeys(METHODS.expand(list(methods))))
    classes = {n: check_method(n) for n in names}  # all refused before anything is read or written
    cells = _source_cells(store)
    if not cells:
        raise UsageError(f"{run_dir} has no finished cells; run it first")
    src = _pick_source(cells, store, source)
    model = src.partition("@")[2]
    groups = manifest.get("eval_set_groups") or {}
    options = (manifest.get("config") or {}).get("method_options") or {}
    src_cells = {stem: rows for stem, rows in cells.items()
                 if rows[0]["method"] == src and rows[0]["eval_set"] != COST_SET}
    # every array is read and checked before any cell is written
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for stem in src_cells:
        path = store.predictions / f"{stem}.npz"
        if not path.is_file():
            raise UsageError(f"{path} is missing; finish the run again with --resume")
        arrays[stem] = read_predictions(path)
        if "logits" not in arrays[stem]:
            raise UsageError(f"{path} holds no logits (the run was made before bench kept them); run the methods "
                             f"with `python -m bench run --resume --methods ...` instead")
    id_name = _id_set(groups)
    by_split: dict[tuple[int, int], str] = {}  # (seed, fold) -> stem of the source's cell on the ID set
    for stem, rows in src_cells.items():
        if rows[0]["eval_set"] == id_name:
            by_split[(int(rows[0]["seed"]), int(rows[0]["fold"]))] = stem

    written: list[dict[str, Any]] = []
    lock = RunLock(run_dir).acquire()  # not while a bench run writes the directory
    try:
        for name, cls in classes.items():
            config = cls.Config(**dict(options.get(name, {})))
            label = _label(name, model)
            scorers: dict[int, Any] = {}
            for stem, rows in src_cells.items():
                first = rows[0]
                seed, fold, ds = int(first["seed"]), int(first["fold"]), first["eval_set"]
                key = cell_key(label, seed, fold, ds)
                if store.done(key):
                    continue
                a = arrays[stem]
                m = scorers.setdefault(seed, cls(config, backbone=first["backbone"],
                                                 num_classes=a["logits"].shape[1], seed=seed))
                pred = m.predict_from_logits(torch.from_numpy(a["logits"]))
                kind = (groups.get(ds) or {}).get("kind", "id" if (a["labels"] >= 0).all() else "ood")
                if kind == "id":
                    values = id_rows(pred, torch.from_numpy(a["labels"]))
                else:
                    id_stem = by_split.get((seed, fold))
                    if id_stem is None:
                        raise UsageError(f"{ds} needs the in-distribution set's cell of {src} seed {seed} fold "
                                         f"{fold}, which the run does not have; finish it with --resume")
                    values = ood_rows(m.predict_from_logits(torch.from_numpy(arrays[id_stem]["logits"])), pred)
                # the eval set's own rows (attack strength, generation time) are the shared baseline's
                extra = {r["metric"]: r["value"] for r in rows if r["metric"] not in values}
                new = tidy({**values, **extra}, {"run_id": store.run_id, "method": label, "backbone":
                                                  first["backbone"], "seed": seed, "fold": fold, "eval_set": ds,
                                                  "shift": first["shift"], "severity": first["severity"]})
                out = {"probs": pred.probs.numpy(), "confidence": pred.confidence.numpy(), "labels": a["labels"],
                       "logits": a["logits"]}
                if "features" in a:
                    out["features"] = a["features"]
                store.write_cell(key, new, out)
                written.extend(new)
            manifest.setdefault("hyperparameters", {})[label] = dataclasses.asdict(config)
        manifest.setdefault("rescored", []).append({
            "methods": names, "from": src, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cells": len({(r["method"], r["seed"], r["fold"], r["eval_set"]) for r in written})})
        store.write_manifest(manifest)
        store.rebuild_indices()
    finally:
        lock.release()
    return pd.DataFrame(written, columns=list(ROW_FIELDS))
