"""Draw docs/mnist-c-grid.png: the first few MNIST test digits, clean and under each of bench's 15 MNIST-C
corruptions, from the same code (and cache) the eval sets use.

    python docs/mnist-c-grid.py [--out docs/mnist-c-grid.png] [--digits 6] [--cache-dir results/cache]
    python docs/mnist-c-grid.py --checksums   # SHA-256 of each full 10k set (for mnistc.REFERENCE_SHA256)

Needs matplotlib (the dev or plots extra). Without a cached full set, only the first chunk of 100 images of each
corruption is generated (a few seconds); --checksums generates and caches every full set (minutes, once).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/mnist-c-grid.png")
    ap.add_argument("--digits", type=int, default=6)
    ap.add_argument("--cache-dir", default="results/cache")
    ap.add_argument("--checksums", action="store_true")
    args = ap.parse_args()

    from bench.datasets import mnistc
    from bench.datasets.evalsets import EvalContext

    if args.checksums:
        ctx = EvalContext(cache_dir=Path(args.cache_dir))
        for name in mnistc.NAMES:
            print(f'    "{name}": "{mnistc.sha256(mnistc.mnistc_images(name, ctx))}",')
        return

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = args.digits
    ctx = EvalContext(cache_dir=Path(args.cache_dir), max_eval=n)
    clean = ctx.embedded("mnist", "test").images[:n].numpy()
    columns = [("clean", clean)] + [(name, mnistc.mnistc_images(name, ctx)) for name in mnistc.NAMES]
    fig, axes = plt.subplots(n, len(columns), figsize=(0.75 * len(columns), 0.8 * n + 0.6))
    for j, (name, imgs) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(np.asarray(imgs[i, 0]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(name.replace("-", "\n"), fontsize=8)
    fig.suptitle("MNIST-C as bench generates it (seed 2019): the first test digits under each corruption",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
