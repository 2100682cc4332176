"""The collected examples of a run: ``<run>/dadc.sqlite``.

One SQLite file in WAL mode (readers never block the writer), ``busy_timeout`` so that concurrent writers wait
instead of failing, ``synchronous=FULL`` and one transaction per flagged example: an example and all its
predictions are committed together or not at all, so nothing is lost or half-written when two people flag at once
or the server stops. A new connection per operation keeps it safe across the web server's threads.

Schema (version ``SCHEMA_VERSION``, kept in ``meta``):

- ``examples(id, created_utc, label, image_png, canvas_png)``: the 28x28 MNIST-like image as an 8-bit grey PNG
  (exactly what the models saw, up to 8-bit rounding), the person's true digit, and the drawing downscaled.
- ``predictions(example_id, method, seed, fold, round, model_key, predicted, confidence)``: one row per method
  shown on the page, with the checkpoint key of the model that made it (``round`` 0 = the run's own checkpoint).
- ``rounds(method, round, seed, fold, parent_key, model_key, checkpoint, examples_used, max_example_id,
  human_copies, mnist_train, epochs, lr, created_utc)``: fine-tuning rounds of ``bench dadc retrain``.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DataError, UsageError

SCHEMA_VERSION = 1
DB_NAME = "dadc.sqlite"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_utc TEXT NOT NULL,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    image_png BLOB NOT NULL,
    canvas_png BLOB
);
CREATE TABLE IF NOT EXISTS predictions (
    example_id INTEGER NOT NULL REFERENCES examples(id) ON DELETE CASCADE,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    fold INTEGER NOT NULL,
    round INTEGER NOT NULL,
    model_key TEXT NOT NULL,
    predicted INTEGER NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (example_id, method)
);
CREATE TABLE IF NOT EXISTS rounds (
    method TEXT NOT NULL,
    round INTEGER NOT NULL CHECK (round >= 1),
    seed INTEGER NOT NULL,
    fold INTEGER NOT NULL,
    parent_key TEXT NOT NULL,
    model_key TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    examples_used INTEGER NOT NULL,
    max_example_id INTEGER NOT NULL,
    human_copies INTEGER NOT NULL,
    mnist_train INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    lr REAL NOT NULL,
    created_utc TEXT NOT NULL,
    PRIMARY KEY (method, round)
);
"""


@dataclass(frozen=True)
class ModelPrediction:
    """What one method said about one drawing, and which model said it."""

    method: str
    seed: int
    fold: int
    round: int
    model_key: str
    predicted: int
    confidence: float


@dataclass(frozen=True)
class Example:
    id: int
    created_utc: str
    label: int
    image_png: bytes


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class DadcStore:
    """``DadcStore(run_dir)``: the run's collection (created on first write; reading a missing one is an error)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME

    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise UsageError(f"{self.path} does not exist: no examples were collected for run {self.run_dir} "
                             f"(collect some with: python -m bench serve --run {self.run_dir})")
        if create and not self.run_dir.is_dir():
            raise UsageError(f"run directory {self.run_dir} does not exist")
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (take the write lock up front, so two writers
        # queue on busy_timeout instead of failing on a lock upgrade)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema(conn, create)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise DataError(f"{self.path} is not a readable dadc database ({e})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: sqlite3.Connection, create: bool) -> None:
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            if not create:
                raise DataError(f"{self.path} has no dadc schema")
            with _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise DataError(f"{self.path} has schema version {row[0] if row else 'none'}; this bench reads version "
                            f"{SCHEMA_VERSION}")

    # --- writes: one transaction each ---------------------------------------------------------------------------
    def add_example(self, image_png: bytes, label: int, predictions: list[ModelPrediction],
                    canvas_png: bytes | None = None) -> int:
        """Store a flagged example with every method's prediction, atomically; returns its id."""
        label = check_label(label)
        with closing(self._connect(create=True)) as conn, _transaction(conn):
            cur = conn.execute("INSERT INTO examples (created_utc, label, image_png, canvas_png) VALUES (?, ?, ?, ?)",
                               (utc_now(), label, sqlite3.Binary(image_png),
                                None if canvas_png is None else sqlite3.Binary(canvas_png)))
            ex_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(ex_id, p.method, p.seed, p.fold, p.round, p.model_key, int(p.predicted), float(p.confidence))
                 for p in predictions])
            return ex_id

    def add_round(self, row: dict[str, Any]) -> None:
        cols = ("method", "round", "seed", "fold", "parent_key", "model_key", "checkpoint", "examples_used",
                "max_example_id", "human_copies", "mnist_train", "epochs", "lr")
        with closing(self._connect(create=True)) as conn, _transaction(conn):
            conn.execute(f"INSERT INTO rounds ({', '.join(cols)}, created_utc) VALUES "
                         f"({', '.join('?' * len(cols))}, ?)", (*(row[c] for c in cols), utc_now()))

    def next_round(self, method: str) -> int:
        if not self.exists():
            return 1
        with closing(self._connect(create=False)) as conn:
            (n,) = conn.execute("SELECT COALESCE(MAX(round), 0) FROM rounds WHERE method = ?", (method,)).fetchone()
        return int(n) + 1

    # --- reads ----------------------------------------------------------------------------------------------
    def examples(self, max_id: int | None = None) -> list[Example]:
        with closing(self._connect(create=False)) as conn:
            rows = conn.execute("SELECT id, created_utc, label, image_png FROM examples WHERE id <= ? ORDER BY id",
                                (max_id if max_id is not None else 2**62,)).fetchall()
        return [Example(int(i), t, int(lab), bytes(png)) for i, t, lab, png in rows]

    def predictions(self, example_id: int) -> list[ModelPrediction]:
        with closing(self._connect(create=False)) as conn:
            rows = conn.execute("SELECT method, seed, fold, round, model_key, predicted, confidence FROM predictions "
                                "WHERE example_id = ? ORDER BY method", (example_id,)).fetchall()
        return [ModelPrediction(*r) for r in rows]

    def fooled(self) -> list[dict[str, Any]]:
        """Per method and model (round): examples flagged against it and how many it got wrong."""
        if not self.exists():
            return []
        with closing(self._connect(create=False)) as conn:
            rows = conn.execute(
                "SELECT p.method, p.round, p.model_key, COUNT(*), SUM(p.predicted != e.label) FROM predictions p "
                "JOIN examples e ON e.id = p.example_id GROUP BY p.method, p.round, p.model_key "
                "ORDER BY p.method, p.round").fetchall()
        return [{"method": m, "round": r, "model_key": k, "flagged": int(n), "fooled": int(f)}
                for m, r, k, n, f in rows]

    def rounds(self, method: str | None = None) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        with closing(self._connect(create=False)) as conn:
            conn.row_factory = sqlite3.Row
            sql = "SELECT * FROM rounds" + (" WHERE method = ?" if method else "") + " ORDER BY method, round"
            return [dict(r) for r in conn.execute(sql, (method,) if method else ())]


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def check_label(label: Any) -> int:
    """The true digit given on the page, as an int 0-9 (a clear error otherwise)."""
    try:
        value = int(str(label).strip())
        ok = str(label).strip() == str(value) and 0 <= value <= 9
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"the true digit must be one of 0-9, got {str(label)[:20]!r}")
    return value
