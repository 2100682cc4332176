"""``trustgan_attacker``: samples of each TrustGAN checkpoint's confidence attacker, with the target's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gallery.config import GALLERY_SEED
from bench.gallery.draw import draw_image, pyplot, row_label, save_figure

TRUSTGAN_SAMPLES = 12


def trustgan_samples(method: Any, n: int = TRUSTGAN_SAMPLES, seed: int = GALLERY_SEED
                     ) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Samples of the checkpoint's attacker from seeded U[0, 1) noise (as in training), mapped from [-1, 1] to
    pixels, and the target's prediction on them."""
    gan = method.attacker
    device = next(gan.parameters()).device
    z = torch.rand((n, gan.out.out_channels, 28, 28), generator=torch.Generator().manual_seed(seed)).to(device)
    was = gan.training
    gan.eval()
    try:
        with torch.no_grad():
            images = ((gan(z) + 1.0) * 0.5).clamp(0, 1)
    finally:
        gan.train(was)
    p = method.predict(images)
    return images.cpu().numpy()[:, 0], [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)]


def draw_trustgan(rows: list[tuple[str, np.ndarray, list[tuple[int, float]]]], run_id: str, seed: int,
                  out_dir: Path) -> list[Path]:
    plt = pyplot()
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(0.85 * n + 1.6, 1.0 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for i, (name, images, preds) in enumerate(rows):
        for j in range(n):
            p, c = preds[j]
            draw_image(axes[i, j], images[j], f"{p} ({c:.2f})")
        row_label(axes[i, 0], name)
    fig.suptitle("TrustGAN: what the confidence attacker generates, and the target's answer", fontsize=9)
    caption = (f"Run {run_id}, seed {seed}. Samples of the attacker saved in each TrustGAN checkpoint (the final one: "
               "the snapshots kept during training for replay are not saved, so no earlier attacker can be shown), "
               f"from seeded uniform noise (gallery seed {GALLERY_SEED}); title: the target network's predicted "
               "class (confidence). A well-trained target answers these with low confidence.")
    return save_figure(fig, out_dir, "trustgan_attacker", caption)
