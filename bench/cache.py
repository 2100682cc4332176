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

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if not p.exists():
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
