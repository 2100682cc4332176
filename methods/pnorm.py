"""MaxLogit-pNorm (Cattelan & Silva, UAI 2024, "How to fix a broken confidence estimator: evaluating post-hoc
methods for selective classification with deep neural networks"), post-hoc on the baseline logits.

    confidence = max_k (z_k - mean(z)) / ||z - mean(z)||_p

(centred logits, as the paper's final method and its authors' code, lfpc/FixSelectiveClassification; ``centralize``
= False drops the centring). ||.||_0 is the number of non-zero entries (torch's convention, which the authors' code
inherits), so p = 0 is MaxLogit up to a constant for almost every logit vector.

p is chosen on the validation split as in the paper: the p of the grid 0, 1, ..., ``grid_max`` (9 in the authors'
code) with the lowest AURC of the baseline's predictions, the MSP competing too (the authors' MSP fallback: the
plain MSP is kept unless some p beats it strictly; ties keep the earlier candidate, MSP first, then increasing p).
``p`` >= 0 fixes p instead (no fitting). The p used is stored in the checkpoint (``p_used``, -1 = MSP fallback) and
in the fitted method's ``train_log.extra``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from bench import metrics
from bench.datasets.mnist import ImageSet
from bench.errors import NotFittedError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches

MSP = -1.0  # p_used when the MSP fallback won


@dataclass(frozen=True)
class PNormConfig(Options):
    # -1 = chosen on validation by AURC; >= 0 fixes it; inf is the max-norm (torch's ord=inf)
    p: float = option(-1.0, ge=0, also=(-1.0, math.inf))
    grid_max: int = option(9, ge=0)  # the grid is p = 0, 1, ..., grid_max (authors' code: 0..9)
    msp_fallback: bool = option(True)  # the MSP competes in the choice (authors' code default)
    centralize: bool = option(True)  # subtract the mean logit first (the paper's final method)


def maxlogit_pnorm(logits: torch.Tensor, p: float, centralize: bool = True) -> torch.Tensor:
    """max_k z_k / ||z||_p of the (centred) logits, float64; norms below 1e-12 are clamped (all-equal logits)."""
    z = logits.double()
    if centralize:
        z = z - z.mean(1, keepdim=True)
    norm = torch.linalg.vector_norm(z, ord=p, dim=1).clamp(min=1e-12)
    return z.max(1).values / norm


def choose_p(logits: torch.Tensor, correct: torch.Tensor, grid_max: int, msp_fallback: bool, centralize: bool
             ) -> float:
    """The grid's p (or MSP = -1) with the lowest validation AURC; strict improvement needed to move on."""
    ok = correct.cpu().numpy()
    best, best_aurc = None, float("inf")
    if msp_fallback:
        best, best_aurc = MSP, metrics.aurc(logits.double().softmax(1).max(1).values.cpu().numpy(), ok)
    for p in range(grid_max + 1):
        a = metrics.aurc(maxlogit_pnorm(logits, float(p), centralize).cpu().numpy(), ok)
        if a < best_aurc:
            best, best_aurc = float(p), a
    return best


@register("pnorm", "Post-hoc: MaxLogit of the p-normalised centred logits, p chosen by validation AURC "
          "(Cattelan & Silva 2024)")
class PNorm(ConfidenceMethod):
    Config = PNormConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.p_used: float | None = None

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        cfg = self.config
        if cfg.p >= 0:
            self.p_used = float(cfg.p)
        else:
            model = self._fitted_model()
            logits, labels = map_batches(lambda x: model(x).float(), model, val, ctx.device)
            self.p_used = choose_p(logits, logits.argmax(1) == labels, cfg.grid_max, cfg.msp_fallback,
                                   cfg.centralize)
        if self.train_log is not None:
            self.train_log = dataclasses.replace(self.train_log, extra={**self.train_log.extra,
                                                                        "p_used": [self.p_used]})

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.p_used is None:
            raise NotFittedError("pnorm is not fitted; call fit() or load_state_dict() first")
        probs = logits.softmax(1)
        if self.p_used == MSP:
            return probs, probs.max(1).values
        return probs, maxlogit_pnorm(logits, self.p_used, self.config.centralize).float()

    def extra_state(self) -> dict[str, float]:
        if self.p_used is None:
            raise NotFittedError("pnorm is not fitted; call fit() first")
        return {"p_used": self.p_used}

    def load_extra_state(self, state: dict[str, float]) -> None:
        self.p_used = float(state["p_used"])
