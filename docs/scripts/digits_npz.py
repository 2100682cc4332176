"""Write scikit-learn's bundled handwritten digits (load_digits: 1,797 images of 8 x 8, values 0-16, 10 classes;
no download) as an .npz that ``bench run --data digits=PATH`` reads.

Conversion to uint8: each value v in 0..16 becomes min(16 v, 255), so 0 -> 0 (background), 15 -> 240 and
16 -> 255 (the only value clipped, by one grey level). The images stay 8 x 8 (bench never resizes your data).

    python docs/scripts/digits_npz.py results/data/digits.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main(out: str) -> None:
    d = load_digits()
    raw = d.images  # (1797, 8, 8) float64, integer values 0..16
    assert raw.min() == 0 and raw.max() == 16 and np.array_equal(raw, np.round(raw))
    images = np.clip(raw * 16, 0, 255).astype(np.uint8)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, labels=d.target.astype(np.int64))
    print(f"{out}: images {images.shape} uint8 [{images.min()}, {images.max()}], labels {np.bincount(d.target)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/data/digits.npz")
