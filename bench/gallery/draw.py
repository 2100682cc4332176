"""Drawing shared by every picture: matplotlib without a display, an image or perturbation in one panel, a row
label, and the caption plus PNG/PDF writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.utils import atomic_write_bytes, figure_bytes

PERT_CMAP = "RdBu_r"  # diverging: red = pixel made brighter, blue = darker, white = unchanged
RIGHT, WRONG, NEUTRAL = "#1a7f37", "#cf222e", "#24292f"


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def draw_image(ax, image: np.ndarray, title: str = "", color: str = NEUTRAL) -> None:
    ax.imshow(np.asarray(image).reshape(image.shape[-2], image.shape[-1]), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color, pad=2)


def draw_perturbation(ax, delta: np.ndarray, scale: float, title: str = "", color: str = NEUTRAL):
    im = ax.imshow(np.asarray(delta).reshape(delta.shape[-2], delta.shape[-1]), cmap=PERT_CMAP, vmin=-scale,
                   vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color, pad=2)
    return im


def row_label(ax, text: str) -> None:
    ax.set_ylabel(text, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)


def save_figure(fig, out_dir: Path, name: str, caption: str) -> list[Path]:
    """Caption under the figure (wrapped), then PNG (small: 100 dpi) and PDF."""
    import textwrap

    plt = pyplot()
    width = max(40, int(fig.get_figwidth() * 19))  # characters of 6.5 pt text per line
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(caption, width)), fontsize=6.5, ha="left", va="top")
    import io

    from PIL import Image

    png, pdf = figure_bytes(fig, "png", dpi=100), figure_bytes(fig, "pdf")
    plt.close(fig)
    atomic_write_bytes(out_dir / f"{name}.pdf", pdf)  # atomic, and a full disk names the folder
    # a 256-colour palette keeps the PNGs at tens of KB (noise-like perturbations compress badly in RGBA)
    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        out = io.BytesIO()
        small.save(out, format="png", optimize=True)
    atomic_write_bytes(out_dir / f"{name}.png", out.getvalue())
    return [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
