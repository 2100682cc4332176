"""The results store of one run directory.

Layout of ``<run>/``: ``manifest.json`` (resolved config, command, versions, git sha, device); ``cells/*.json``
(the tidy rows of one finished (method, seed, fold, eval set) cell: its presence marks the cell done);
``predictions/*.npz`` (per-sample probabilities, confidences, labels); ``results.csv`` (all rows, rebuilt
atomically after every unit); ``errors.json`` (cells that failed, with their one-line reason);
``checkpoints.json`` (the cached checkpoint of each fitted method).

Concurrency: cells (and their predictions) are one file each, written atomically, so any number of worker
processes, on any machine that sees the run directory, may write them at once. So are the records the run-wide
indices are made of: ``fitted/*.json`` (one per fitted (method, seed, fold), written before its first cell),
``failed/*.json`` (one per failed (method, seed, fold), removed when it later succeeds) and ``eval_sets/*.json``
(shift family, group and severity of each eval set built). The run-wide files (results.csv, checkpoints.json,
errors.json, the manifest's ``eval_set_groups``) are only ever *derived* from those files, by the driver
(``rebuild_indices``), so they are consistent after any interruption and a ``--resume`` repairs them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DataError, UsageError
from bench.utils import atomic_write_bytes, atomic_write_text

#: what ``bench run`` creates in a run directory before its manifest (a folder without a bench manifest that holds
#: anything else is not a run: bench refuses to write into it)
PRE_MANIFEST = frozenset({".lock", "cells", "predictions"})
MANIFEST_KEYS = ("run_id", "config", "command", "versions")
RECORD_DIRS = ("fitted", "failed", "eval_sets")


def _is_temporary(name: str) -> bool:
    """An atomic write's temporary file (bench.utils.atomic_write_bytes), left behind if its writer was killed."""
    return name.startswith(".") and name.endswith(".tmp")


ROW_FIELDS = ("run_id", "method", "backbone", "seed", "fold", "eval_set", "shift", "severity", "metric", "value")


#: what a name that becomes part of a file name may hold (method, model and run names): no path separator, no
#: leading dot (so never '..'), nothing a shell or another OS reads specially
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@=-]*")


def check_name(name: str, what: str) -> str:
    """``name`` unchanged if it is safe as part of a file name, else a one-line UsageError naming ``what``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 120:
        raise UsageError(f"{what} {name!r} cannot name files: use letters, digits and _ . + @ = - (not starting "
                         "with '.' or '-', no '/', at most 120 characters)")
    return name


def cell_key(method: str, seed: int, fold: int, eval_set: str) -> str:
    check_name(method, "method name")  # every writer's names are checked at its entry; this is the last guard
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", eval_set)
    return f"{method}__seed{seed}__fold{fold}__{safe}"


def check_new_out(run_dir: Path, flag: str = "--out") -> None:
    """Commands that write a run in one go (``bench score``, ``bench uap-sweep``) take a new or empty folder only:
    they never write over a user's files or another run's (``bench run`` resumes its own runs instead)."""
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UsageError(f"{flag} {run_dir} is a file; give a new or empty folder") from None
    except OSError as e:
        raise UsageError(f"cannot read {flag} {run_dir}: {e.strerror or e}; choose another {flag}") from None
    if names:
        raise UsageError(f"{flag} {run_dir} is not empty (it holds {names[0]}); bench will not write over it: "
                         "choose a new or empty folder")


def read_predictions(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a cell's predictions file (``keys``: those only, each required), never unpickled; a damaged or
    foreign file is one line naming it (numpy's own message would advise allow_pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a bare .npy array")
            missing = [k for k in keys or () if k not in z.files]
            if missing:
                raise ValueError(f"no array {missing[0]!r}")
            return {k: z[k] for k in (keys or z.files)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        why = str(e).splitlines()[0] if isinstance(e, ValueError) and "pickle" not in str(e) else type(e).__name__
        raise UsageError(f"{path} is not a predictions file bench wrote ({why}); remove it and finish the run again "
                         "with `bench run --resume`") from None


def fit_key(method: str, seed: int, fold: int) -> str:
    return f"{method}__seed{seed}__fold{fold}"


def check_rows(data: Any, where: str) -> list[dict[str, Any]]:
    """A cell file's content, checked: a list of rows that have every ``ROW_FIELDS`` key."""
    if not isinstance(data, list) or not all(isinstance(r, dict) and all(f in r for f in ROW_FIELDS) for r in data):
        raise DataError(f"{where} is malformed (expected a list of result rows)")
    return data


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

    def foreign_entry(self) -> str | None:
        """The first entry that shows this existing, non-empty folder is not a bench run (None if it is one, is
        empty or does not exist): a manifest.json that bench did not write, or, without a manifest, any file that
        is not bench's own."""
        try:
            names = sorted(os.listdir(self.dir))
        except (FileNotFoundError, NotADirectoryError):  # a new folder, or no folder possible (reported on writing)
            return None
        manifest = self.dir / "manifest.json"
        if manifest.exists():
            try:
                data = json.loads(manifest.read_text())
            except (OSError, ValueError):
                return "manifest.json"
            return None if isinstance(data, dict) and all(k in data for k in MANIFEST_KEYS) else "manifest.json"
        return next((n for n in names if n not in PRE_MANIFEST and not _is_temporary(n)), None)

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

    def read_arrays(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of a finished cell (predictions/<key>.npz)."""
        path = self.predictions / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path} cannot be read ({type(e).__name__}); delete its cell {self.cells / key}.json "
                            f"and continue with --resume --out {self.dir}") from None

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in sorted(self.cells.glob("*.json")):
            out.extend(self.read_cell(p))
        return out

    def read_cell(self, path: Path) -> list[dict[str, Any]]:
        try:
            return check_rows(json.loads(path.read_text()), str(path))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{path} is corrupt (not JSON); delete it and continue with --resume --out "
                            f"{self.dir}") from None

    def set_aside_corrupt_cells(self) -> list[Path]:
        """Cells that do not read as rows (damaged outside bench: bench writes them atomically) are renamed to
        ``*.corrupt`` so that they count as not done and are recomputed; returns the renamed files."""
        bad = []
        for p in sorted(self.cells.glob("*.json")) if self.cells.is_dir() else []:
            try:
                self.read_cell(p)
            except DataError:
                p.replace(p.with_name(p.name + ".corrupt"))
                (self.predictions / f"{p.stem}.npz").unlink(missing_ok=True)
                bad.append(p)
        return bad

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

    # --- records (one file each, written by whichever process did the work) -------------------------------------
    def record_fitted(self, method: str, seed: int, fold: int, key: str, path: str | Path) -> None:
        """Which cached checkpoint holds a fitted (method, seed, fold): written before its first cell."""
        entry = {"method": method, "seed": seed, "fold": fold, "key": key, "path": str(Path(path).resolve())}
        atomic_write_text(self.dir / "fitted" / f"{fit_key(method, seed, fold)}.json", json.dumps(entry, indent=2,
                                                                                                   sort_keys=True))

    def fitted(self) -> dict[str, dict[str, Any]]:
        return self._records("fitted")

    def fitted_entry(self, method: str, seed: int, fold: int) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / "fitted" / f"{fit_key(method, seed, fold)}.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def remove_temporary_files(self) -> None:
        """Temporary files of atomic writes that a killed process left behind (only while holding the run's
        lock: no other process writes this run then)."""
        for folder in (self.dir, self.cells, self.predictions, *(self.dir / d for d in RECORD_DIRS)):
            for p in folder.glob(".*.tmp") if folder.is_dir() else []:
                p.unlink(missing_ok=True)

    def record_failure(self, entry: dict[str, Any]) -> None:
        atomic_write_text(self.dir / "failed" / f"{fit_key(entry['method'], entry['seed'], entry['fold'])}.json",
                          json.dumps(entry, indent=2))

    def clear_failure(self, method: str, seed: int, fold: int) -> None:
        (self.dir / "failed" / f"{fit_key(method, seed, fold)}.json").unlink(missing_ok=True)

    def record_unit_time(self, marker: str, info: dict[str, Any]) -> None:
        """When a grid unit ran, in which process and with how many threads (``units/``; tools/grid_timeline.py
        reads them). Provenance of the run's wall time, never a result row; a resumed unit overwrites its record."""
        atomic_write_text(self.dir / "units" / f"{marker}.json", json.dumps(info, indent=2, sort_keys=True))

    def unit_times(self) -> list[dict[str, Any]]:
        folder = self.dir / "units"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def record_eval_set(self, name: str, info: dict[str, Any]) -> None:
        path = self.dir / "eval_sets" / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', name)}.json"
        text = json.dumps({"name": name, **info}, sort_keys=True)
        if not (path.exists() and path.read_text() == text):  # most units rebuild the same sets: skip the rewrite
            atomic_write_text(path, text)

    def _records(self, folder: str) -> dict[str, dict[str, Any]]:
        """Readable records of a folder by file stem (an unreadable one, damaged outside bench, counts as absent:
        the work it describes is redone on --resume)."""
        out = {}
        d = self.dir / folder
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                out[p.stem] = data
        return out

    # --- run-wide indices, derived from the records (driver only) ------------------------------------------------
    def rebuild_indices(self) -> None:
        """results.csv, checkpoints.json, errors.json and the manifest's eval_set_groups from what is on disk."""
        self._migrate_checkpoints_index()
        self.write_results_csv()
        index = self.fitted()
        if index or (self.dir / "checkpoints.json").exists():
            atomic_write_text(self.dir / "checkpoints.json", json.dumps(index, indent=2, sort_keys=True))
        self._write_errors_index()
        groups = {r.pop("name"): r for r in self._records("eval_sets").values() if "name" in r}
        manifest = self.read_manifest()
        if manifest is not None and groups and manifest.get("eval_set_groups") != {**manifest.get(
                "eval_set_groups", {}), **groups}:
            manifest["eval_set_groups"] = {**manifest.get("eval_set_groups", {}), **groups}
            self.write_manifest(manifest)

    def _migrate_checkpoints_index(self) -> None:
        """A run written before the records existed has only checkpoints.json: turn its entries into records."""
        index_path = self.dir / "checkpoints.json"
        if (self.dir / "fitted").exists() or not index_path.exists():
            return
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            return  # unreadable: --resume refits (from the cache) whatever has cells but no record
        for e in index.values() if isinstance(index, dict) else []:
            if isinstance(e, dict) and {"method", "seed", "fold", "key", "path"} <= set(e):
                self.record_fitted(e["method"], e["seed"], e["fold"], e["key"], e["path"])

    def _write_errors_index(self) -> None:
        errors = [e for _, e in sorted(self._records("failed").items())]
        path = self.dir / "errors.json"
        if errors:
            atomic_write_text(path, json.dumps(errors, indent=2))
        else:
            path.unlink(missing_ok=True)

