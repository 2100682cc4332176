"""RelU, relative uncertainty (Dadalto, Colombo, Staerman, Gorla & Piantanida, NeurIPS 2023, "A data-driven measure
of relative uncertainty for misclassification detection"), post-hoc on the baseline logits.

With p = softmax(logits / T), the uncertainty is the quadratic form u(x) = p^T D p of a learned C x C matrix D:
D[i, j] says how much disagreement between classes i and j signals an error. D is fitted on the validation split,
split by whether the baseline's prediction is right, in closed form (the paper's Lagrangian solution: symmetric,
zero diagonal, non-negative entries, unit Frobenius norm):

    D = normalise( relu( offdiag( lambda * E_wrong[p p^T] - (1 - lambda) * E_right[p p^T] ) ) )

If every entry is clipped to 0 (no error signal), D falls back to ones off the diagonal, where u = 1 - sum p^2
(the Gini impurity, DOCTOR's D_alpha), up to the normalisation. Confidence = -u (higher = more trustworthy).
lambda = 0.5 and T = 1 are the defaults of the authors' code (edadaltocg/relative-uncertainty). An empty group
(no validation error, or no correct prediction) contributes a zero mean instead of the NaN the authors' mean gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets.mnist import ImageSet
from bench.errors import NotFittedError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches


@dataclass(frozen=True)
class RelUConfig(Options):
    lbd: float = option(0.5, ge=0, le=1)  # lambda: weight of the errors' term against the correct ones'
    temperature: float = option(1.0, gt=0)  # softmax temperature of p


def fit_relative_uncertainty(probs: torch.Tensor, wrong: torch.Tensor, lbd: float) -> torch.Tensor:
    """The closed-form D (C x C, float64) from validation probabilities and error flags."""
    p = probs.double()
    c = p.shape[1]

    def second_moment(rows: torch.Tensor) -> torch.Tensor:
        return rows.T @ rows / len(rows) if len(rows) else torch.zeros(c, c, dtype=torch.float64)

    d = lbd * second_moment(p[wrong]) - (1 - lbd) * second_moment(p[~wrong])
    off = ~torch.eye(c, dtype=torch.bool)
    d = torch.where(off, d, 0.0).clamp(min=0)  # zero diagonal, non-negative
    if not bool((d > 0).any()):
        d = off.double()  # the Gini fallback
    return d / d.norm()


@register("relu", "Post-hoc misclassification detector: relative uncertainty p^T D p, D fitted on validation "
          "errors (Dadalto et al. 2023)")
class RelU(ConfidenceMethod):
    Config = RelUConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.matrix: torch.Tensor | None = None  # D, fitted on the validation split

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        logits, labels = map_batches(lambda x: model(x).float(), model, val, ctx.device)
        logits, labels = logits.cpu(), labels.cpu()
        probs = (logits.double() / self.config.temperature).softmax(1)
        self.matrix = fit_relative_uncertainty(probs, logits.argmax(1) != labels, self.config.lbd)

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.matrix is None:
            raise NotFittedError("relu is not fitted; call fit() or load_state_dict() first")
        p = (logits.double() / self.config.temperature).softmax(1)
        u = ((p @ self.matrix.to(p.device)) * p).sum(1)
        return logits.softmax(1), (-u).float()

    def extra_state(self) -> dict[str, torch.Tensor]:
        if self.matrix is None:
            raise NotFittedError("relu is not fitted; call fit() first")
        return {"matrix": self.matrix}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.matrix = state["matrix"].double().cpu()
