"""A 3-channel 32 x 32 synthetic labelled set, made with a fixed seed, for checking bench on colour images of
another size (docs/your-data.md). Class k (of 4) is a bright square on a noisy background: the square's colour is
the class's (red, green, blue, yellow), its position random; background and square carry Gaussian noise, so the
classes are learnable from colour but not by a single pixel value.

    python docs/scripts/synthetic_rgb.py results/data/rgb32.npz [--n 1200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLOURS = np.array([[220, 40, 40], [40, 200, 40], [50, 60, 230], [220, 210, 40]], dtype=np.float64)
SEED = 32


def make(n: int, size: int = 32, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(COLOURS), n)
    images = rng.normal(70, 30, (n, 3, size, size))
    side = size // 3
    for i, k in enumerate(labels):
        top, left = rng.integers(0, size - side + 1, 2)
        patch = COLOURS[k][:, None, None] + rng.normal(0, 25, (3, side, side))
        images[i, :, top : top + side, left : left + side] = patch
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels.astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?", default="results/data/rgb32.npz")
    p.add_argument("--n", type=int, default=1200)
    p.add_argument("--ood", help="also write an OOD set of the same shape: squares of a colour no class has")
    args = p.parse_args()
    images, labels = make(args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels)
    print(f"{args.out}: images {images.shape} uint8, labels {np.bincount(labels)}")
    if args.ood:
        rng = np.random.default_rng(SEED + 1)
        ood = rng.normal(70, 30, (200, 3, 32, 32))
        ood[:, :, 8:19, 8:19] = np.array([200, 60, 220])[:, None, None]  # magenta: no class is magenta
        np.savez_compressed(args.ood, images=np.clip(np.round(ood), 0, 255).astype(np.uint8))
        print(f"{args.ood}: 200 OOD images (3, 32, 32)")


if __name__ == "__main__":
    main()
