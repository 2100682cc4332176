"""The results store of one run directory.

Layout of ``<run>/``: ``manifest.json`` (resolved config, command, versions, git sha, device); ``cells/*.json``
(the tidy rows of one finished (method, seed, fold, eval set) cell: its presence marks the cell done);
``predictions/*.npz`` (per-sample probabilities, confidences, labels); ``results.csv`` (all rows, rebuilt
atomically after every unit); ``errors.json`` (cells that failed, with their one-line reason);
``checkpoints.json`` (the cached checkpoint of each fitted method).

Concurrency: cells (and their predictions) are one file each, written atomically, so any number of worker
processes, on any machine that sees the run directory, may write them at once. The run-wide files (manifest,
results.csv, checkpoints.json, errors.json) are read-modify-write: only the driver process writes them, from what
the workers return.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.utils import atomic_write_bytes, atomic_write_text

ROW_FIELDS = ("run_id", "method", "backbone", "seed", "fold", "eval_set", "shift", "severity", "metric", "value")


def cell_key(method: str, seed: int, fold: int, eval_set: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", eval_set)
    return f"{method}__seed{seed}__fold{fold}__{safe}"


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.cells = self.dir / "cells"
        self.predictions = self.dir / "predictions"

    @property
    def run_id(self) -> str:
        return self.dir.name

    def ensure_writable(self) -> None:
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
            self.predictions.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.dir / ".write-test", "ok")
            (self.dir / ".write-test").unlink()
        except OSError as e:
            raise UsageError(f"cannot write to --out {self.dir}: {e.strerror or e}; choose another --out") from None

    def has_results(self) -> bool:
        return self.cells.is_dir() and any(self.cells.glob("*.json"))

    def done(self, key: str) -> bool:
        return (self.cells / f"{key}.json").exists()

    def write_cell(self, key: str, rows: list[dict[str, Any]], arrays: dict[str, np.ndarray] | None = None) -> None:
        """Predictions first, rows last: the rows file is the completion marker, so a crash in between leaves the
        cell undone (and it is recomputed on --resume), never half-recorded."""
        if arrays is not None:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            atomic_write_bytes(self.predictions / f"{key}.npz", buf.getvalue())
        atomic_write_text(self.cells / f"{key}.json", json.dumps(rows))

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in sorted(self.cells.glob("*.json")):
            out.extend(json.loads(p.read_text()))
        return out

    def write_results_csv(self) -> Path:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows())
        path = self.dir / "results.csv"
        atomic_write_text(path, buf.getvalue())
        return path

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))

    def read_manifest(self) -> dict[str, Any] | None:
        p = self.dir / "manifest.json"
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            raise UsageError(f"{p} is corrupt (not JSON); start a new run with another --out") from None

    def record_checkpoint(self, method: str, seed: int, fold: int, key: str, path: Path) -> None:
        self.record_checkpoints([(method, seed, fold, key, str(path))])

    def record_checkpoints(self, entries: list[tuple[str, int, int, str, str]]) -> None:
        """``checkpoints.json``: which cached checkpoint holds each fitted (method, seed, fold) of this run, so
        later commands (predict, serve) can load the trained methods. Entries are (method, seed, fold, key, path).
        A read-modify-write: only the driver calls it (workers return their entries)."""
        if not entries:
            return
        index_path = self.dir / "checkpoints.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        for method, seed, fold, key, path in entries:
            index[f"{method}__seed{seed}__fold{fold}"] = {"method": method, "seed": seed, "fold": fold, "key": key,
                                                          "path": str(Path(path).resolve())}
        atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))

    def checkpoints(self) -> dict[str, Any]:
        p = self.dir / "checkpoints.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_errors(self, errors: list[dict[str, Any]]) -> None:
        path = self.dir / "errors.json"
        if errors:
            atomic_write_text(path, json.dumps(errors, indent=2))
        else:
            path.unlink(missing_ok=True)
