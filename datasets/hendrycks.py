"""The noise OOD set of Hendrycks & Gimpel's MNIST baseline (ICLR 2017, Table 2) where it differs from bench's.

Their code (hendrycks/error-detection, MNIST notebook) draws "sheer white Gaussian noise" as
``np.random.normal(size=(10000, 784))``: mean 0, standard deviation 1, *not* clipped, so pixels leave [0, 1] (about
half are negative). bench's ``ood:gaussian`` is N(0.5, 0.25^2) clipped to [0, 1], a different set. ``hg:gaussian``
reproduces theirs (10k images, fixed seed); it deliberately breaks the [0, 1] image convention, as the reference
does, and is not among the default sets. Their uniform noise, U[0, 1] per pixel, is bench's ``ood:uniform``.
"""

from __future__ import annotations

import torch

from bench.datasets.evalsets import EVAL_SETS, NOISE_SEED, EvalContext, EvalData, EvalSetSpec


def _gaussian(ctx: EvalContext) -> EvalData:
    n = ctx.cap(10_000)
    images = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(NOISE_SEED))
    return EvalData("hg:gaussian", images, torch.full((n,), -1), "ood", "ood", group="far")


EVAL_SETS.add("hg:gaussian", EvalSetSpec(_gaussian, offline=True, report_group="ood-far"),
              "Hendrycks & Gimpel's Gaussian noise: N(0, 1) per pixel, not clipped (10k, fixed seed), far OOD")
