"""Helpers for the dadc tests: a tiny real run (smoke profile, 500 training images) and drawings as the page's
canvas sends them (PNG data URLs)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from bench.cli import main

RUN_ARGS = ["run", "--profile", "smoke", "--methods", "msp,mcdropout", "--device", "cpu", "--no-progress",
            "--datasets", "mnist", "--set", "split.max_train=500", "--set", "eval.max_eval=200"]


def make_run(root: Path, cache: Path) -> Path:
    """A finished run with msp and mcdropout fitted (seconds on a CPU; checkpoints shared through ``cache``)."""
    run = root / "run"
    assert main([*RUN_ARGS, "--out", str(run), "--cache-dir", str(cache)]) == 0
    return run


def png_bytes(grey: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(grey, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def data_url(grey: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(grey)).decode()


def stroke(side: int = 280, width: int = 18) -> np.ndarray:
    """A vertical bar (a "1") drawn white on a black canvas, uint8."""
    img = np.zeros((side, side), dtype=np.uint8)
    img[side // 7 : side - side // 7, side // 2 - width // 2 : side // 2 + width // 2] = 255
    return img
