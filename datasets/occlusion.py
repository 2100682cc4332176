"""Occlusion shifts of the MNIST test set: PMNIST (Partial MNIST, the missing-feature study's four fixed cuts) and a
seeded random-squares severity sweep.

Removed pixels are set to 0 in raw [0, 255] space (black, the MNIST background). Rows and columns are 0-based and
ranges are inclusive: ``rows 0-13`` is ``[0:14]``. The PMNIST cuts follow the reference code of
nmilosev/negative-learning (DESIGN.md section 4):

- ``horizontal``: rows 0-13 (the top half)
- ``vertical``: cols 0-13 (the left half)
- ``diagonal``: rows 0-13 x cols 15-27 plus rows 15-27 x cols 0-13 (row 14 and col 14 are kept)
- ``triple``: three fixed 9x9 squares, rows 6-14 x cols 6-14, rows 18-26 x cols 11-19, rows 8-16 x cols 17-25

``occlusion:random-squares=F`` removes 7x7 squares at uniformly random positions, one image at a time, until at
least a fraction F of the 784 pixels is removed (the last square may overshoot by under 49 pixels; the mean
removed fraction is reported as an extra row). The positions come from a fixed seed, drawn for all 10k test images
so that a capped set (``eval.max_eval``) is a prefix of the full one.

On a user's --data of H x W the random squares are round(H/4) x round(W/4) (at least 1; 7x7 on 28x28, so MNIST's
masks are unchanged) and F is a fraction of the H*W pixels; PMNIST's fixed cuts are MNIST-only.
"""

from __future__ import annotations

import torch

from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.errors import UsageError

SIZE = 28
SQUARE = 7
OCCLUSION_SEED = 4321
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)

# (row slice, col slice) rectangles removed by each cut, inclusive ranges written as Python slices.
PMNIST_CUTS: dict[str, tuple[tuple[slice, slice], ...]] = {
    "horizontal": ((slice(0, 14), slice(0, 28)),),
    "vertical": ((slice(0, 28), slice(0, 14)),),
    "diagonal": ((slice(0, 14), slice(15, 28)), (slice(15, 28), slice(0, 14))),
    "triple": ((slice(6, 15), slice(6, 15)), (slice(18, 27), slice(11, 20)), (slice(8, 17), slice(17, 26))),
}


def pmnist_mask(cut: str) -> torch.Tensor:
    """Boolean (28, 28) mask, True where a PMNIST cut removes the pixel."""
    if cut not in PMNIST_CUTS:
        raise UsageError(f"pmnist:{cut} is not a PMNIST cut; use one of {', '.join(PMNIST_CUTS)}")
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for rows, cols in PMNIST_CUTS[cut]:
        mask[rows, cols] = True
    return mask


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked pixels (mask (H, W) or (N, H, W)); returns a new tensor of the same dtype."""
    keep = ~mask.to(images.device)
    return images * (keep.unsqueeze(-3) if keep.dim() == 3 else keep).to(images.dtype)


def random_square_masks(n: int, fraction: float, seed: int = OCCLUSION_SEED, square: int = SQUARE,
                        size: tuple[int, int] = (SIZE, SIZE)) -> torch.Tensor:
    """(n, H, W) masks (default 28x28): squares (``square`` pixels, or (rows, cols)) at seeded random positions,
    added per image until >= ``fraction`` of the H*W pixels are removed."""
    height, width = size
    sq_h, sq_w = (square, square) if isinstance(square, int) else square
    target = fraction * height * width
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, height, width, dtype=torch.bool)
    rows_at, cols_at = torch.arange(height), torch.arange(width)
    while True:
        active = masks.flatten(1).sum(1) < target
        if not active.any():
            return masks
        top = torch.randint(0, height - sq_h + 1, (n,), generator=g)
        left = torch.randint(0, width - sq_w + 1, (n,), generator=g)
        rows = (rows_at >= top[:, None]) & (rows_at < top[:, None] + sq_h)
        cols = (cols_at >= left[:, None]) & (cols_at < left[:, None] + sq_w)
        masks |= rows[:, :, None] & cols[:, None, :] & active[:, None, None]


def square_for(height: int, width: int) -> tuple[int, int]:
    """The random square of an H x W image: a quarter of each side (7x7 on MNIST), at least one pixel."""
    return max(1, round(height / 4)), max(1, round(width / 4))


def _test_set(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    test = ctx.id_part("test")  # MNIST test, or the user's --data test part (PMNIST refuses that before)
    n = ctx.cap(len(test))
    return test.images[:n], test.labels[:n]


def _pmnist(ctx: EvalContext, params: str) -> EvalData:
    mask = pmnist_mask(params)
    images, labels = _test_set(ctx)
    return EvalData(f"pmnist:{params}", apply_mask(images, mask), labels, "id", "pmnist", severity=params,
                    extra={"removed_fraction": float(mask.float().mean()) * 100})


def parse_fraction(params: str) -> float:
    kind, sep, value = params.partition("=")
    try:
        frac = float(value)
    except ValueError:
        frac = -1.0
    if kind != "random-squares" or not sep or not 0 < frac < 1:
        raise UsageError(f"occlusion:{params} is malformed; use occlusion:random-squares=F with 0 < F < 1, "
                         "e.g. occlusion:random-squares=0.3 (or occlusion:random-squares for the sweep)")
    return frac


def _random_squares(ctx: EvalContext, params: str) -> EvalData:
    frac = parse_fraction(params)
    images, labels = _test_set(ctx)
    full = len(ctx.id_part("test"))
    h, w = images.shape[-2:]
    masks = random_square_masks(full, frac, square=square_for(h, w), size=(h, w))[: len(images)]
    return EvalData(f"occlusion:{params}", apply_mask(images, masks), labels, "id", "occlusion",
                    severity=f"{frac:g}", extra={"removed_fraction": float(masks.float().mean()) * 100})


def _sweep_only(ctx: EvalContext, params: str) -> EvalData:
    raise UsageError("occlusion:random-squares is a sweep; name one level as occlusion:random-squares=F")


PMNIST_DEFAULTS = tuple(f"pmnist:{c}" for c in PMNIST_CUTS)
SQUARES_DEFAULTS = tuple(f"occlusion:random-squares={f:g}" for f in FRACTIONS)

EVAL_SETS.add("pmnist", EvalSetSpec(_pmnist, offline=True, family=True, defaults=PMNIST_DEFAULTS,
                                    report_group="occlusion"),
              "Partial MNIST test: pmnist:horizontal|vertical|diagonal|triple (fixed cuts, pixels set to 0)")
EVAL_SETS.add("occlusion", EvalSetSpec(_random_squares, offline=True, family=True, defaults=SQUARES_DEFAULTS,
                                       check=parse_fraction, report_group="occlusion", any_shape=True),
              "MNIST test with seeded random 7x7 squares removed: occlusion:random-squares=F (fraction F >= removed)")
EVAL_SETS.add("occlusion:random-squares", EvalSetSpec(_sweep_only, offline=True, family=True,
                                                     defaults=SQUARES_DEFAULTS, report_group="occlusion",
                                                     any_shape=True),
              f"random-squares sweep at removed fractions {', '.join(f'{f:g}' for f in FRACTIONS)}")
