"""Disk cost of the arrays a run keeps per cell: for every ``predictions/*.npz`` of a run, its size as written and the
size the same writer (``np.savez_compressed``) gives without the logits and features, i.e. what a cell cost before
bench kept them.

    python docs/scripts/cell_bytes.py RUN [RUN ...]

Prints, per run, the mean bytes per cell with probs/confidence/labels only, with logits, and with features (when
the run kept them), and the mean of each array's compressed share. docs/reporting.md records a result.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def npz_bytes(arrays: dict[str, np.ndarray]) -> int:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return len(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    for run in args.runs:
        files = sorted((run / "predictions").glob("*.npz"))
        sizes: dict[str, list[int]] = {"before": [], "with logits": [], "with features": [], "as stored": []}
        n_images = set()
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            base = {k: a[k] for k in ("probs", "confidence", "labels")}
            n_images.add(len(a["labels"]))
            sizes["as stored"].append(f.stat().st_size)
            sizes["before"].append(npz_bytes(base))
            if "logits" in a:
                sizes["with logits"].append(npz_bytes({**base, "logits": a["logits"]}))
            if "features" in a:
                sizes["with features"].append(npz_bytes(a))
        print(f"{run}: {len(files)} cells, images per cell {sorted(n_images)}")
        for k, v in sizes.items():
            if v:
                print(f"  {k:>14}: mean {np.mean(v):,.0f} bytes per cell (min {min(v):,}, max {max(v):,})")


if __name__ == "__main__":
    main()
