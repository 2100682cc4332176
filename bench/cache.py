"""Checkpoint cache: trained state keyed by a hash of everything that determines it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from bench.utils import atomic_write_bytes


class CheckpointCache:
    """Files ``<root>/<key>.pt``; writes are atomic, a corrupt file is treated as a miss (and replaced)."""

    def __init__(self, root: str | Path, ignore_existing: bool = False):
        self.root = Path(root)
        self.ignore_existing = ignore_existing  # True: only entries written by this object count (--retrain)
        self._written: set[str] = set()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if not p.exists() or (self.ignore_existing and key not in self._written):
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: retrain rather than crash
            warnings.warn(f"ignoring unreadable checkpoint {p} ({type(e).__name__}); it will be retrained")
            return None

    def put(self, key: str, obj: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(self.path(key), buf.getvalue())
        self._written.add(key)
