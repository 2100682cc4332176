"""Checkpoint cache: trained state keyed by a hash of everything that determines it.

Several processes (``--jobs N`` workers, Ray workers on other machines) may share one cache directory: writes are
atomic (temp file + rename), and ``lock(key)`` serialises the training of one key across processes (an advisory
``flock`` on ``<root>/.locks/<key>.lock``), so that two workers never train the same checkpoint at once: the second
waits, then finds the entry written by the first. A training that opts in (``EpochResume``, methods/core/training.py)
also leaves its state after every finished epoch in ``<root>/.partial/<key>.pt``, so an interrupted run continues
it from there; ``put`` of the finished checkpoint removes it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.utils import atomic_write_bytes

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, duplicate training is only wasteful
    fcntl = None  # type: ignore[assignment]


class CheckpointCache:
    """Files ``<root>/<key>.pt``; writes are atomic, a corrupt file is treated as a miss (and replaced).

    ``ignore_existing`` (``--retrain``): entries present when the cache object was created do not count, entries
    written since (by this object or by another process of the same run, e.g. a parallel worker given this object)
    do. It is a snapshot of file names and modification times, so it survives pickling to worker processes."""

    def __init__(self, root: str | Path, ignore_existing: bool = False):
        self.root = Path(root)
        self.ignore_existing = ignore_existing
        self._stale: dict[str, int] = {}
        if ignore_existing and self.root.is_dir():
            for p in self.root.glob("*.pt"):
                with contextlib.suppress(OSError):
                    self._stale[p.stem] = p.stat().st_mtime_ns
            for p in self.root.glob(".partial/*.pt"):  # an unfinished training of before restarts too
                with contextlib.suppress(OSError):
                    self._stale[".partial/" + p.stem] = p.stat().st_mtime_ns

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def _is_stale(self, key: str, p: Path) -> bool:
        if key not in self._stale:
            return False
        try:
            return p.stat().st_mtime_ns == self._stale[key]
        except OSError:
            return True

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read(key, self.path(key), "checkpoint", "it will be retrained")

    def put(self, key: str, obj: dict[str, Any]) -> None:
        self._write(key, self.path(key), obj)
        # the finished checkpoint supersedes its training's saved epochs (and those of its phases, ``<key>.<phase>``)
        for p in [self.partial_path(key), *self.root.glob(f".partial/{key}.*.pt")]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # --- a training in progress: its state after its last finished epoch (methods/core/training.py fit_loop) ---
    def partial_path(self, key: str) -> Path:
        return self.root / ".partial" / f"{key}.pt"

    def get_partial(self, key: str) -> dict[str, Any] | None:
        """The saved state of ``key``'s unfinished training, or None (none, unreadable, or from before --retrain)."""
        return self._read(".partial/" + key, self.partial_path(key), "partial training", "it restarts from epoch 1")

    def put_partial(self, key: str, obj: dict[str, Any]) -> None:
        self._write(".partial/" + key, self.partial_path(key), obj)

    def _read(self, name: str, p: Path, what: str, then: str) -> dict[str, Any] | None:
        if not p.exists() or self._is_stale(name, p):
            return None
        try:
            # weights_only: a checkpoint holds tensors, numbers, strings, lists and dicts only, so a cache folder or
            # a run received from someone else cannot run code here (full unpickling would)
            return torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            warnings.warn(f"ignoring {what} {p}: it holds Python objects beyond tensors, which bench never "
                          f"unpickles (it was not written by bench, or was altered); {then}")
            return None
        except Exception as e:  # a torn or foreign file: retrain rather than crash
            warnings.warn(f"ignoring unreadable {what} {p} ({type(e).__name__}); {then}")
            return None

    def _write(self, name: str, p: Path, obj: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(p, buf.getvalue())
        self._stale.pop(name, None)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive, blocking, cross-process lock of one key (released when the block ends or the holder dies).
        Hold it around "look up, else train and put"."""
        if fcntl is None:
            yield
            return
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
