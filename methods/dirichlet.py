"""Dirichlet calibration (Kull, Perello-Nieto, Kängsepp, Silva Filho, Song & Flach, NeurIPS 2019) of the baseline.

Probabilities become softmax(W ln q + b), q = softmax(logits) the uncalibrated probabilities: a linear layer on
log-probabilities (a multinomial logistic regression with ln q as features), fitted on the validation split with
the classifier frozen; the confidence is their maximum. The fit minimises the mean NLL plus the paper's ODIR term
(off-diagonal and intercept regularisation), lam / (C (C - 1)) * sum_{i != j} W_ij^2 + mu / C * sum_j b_j^2, so the
diagonal (per-class scales) is free and the interactions and biases are shrunk. ln q is clipped below at the
float64 epsilon (ln q >= -36.04), as the authors' code clips q.

lam and mu: by default chosen on the validation split by 5-fold cross-validation of the held-out NLL over the
grid 10^-3 .. 10^3 (seven decades each, 49 pairs), then refitted on the whole split; the authors' experiments chose
them the same way (5-fold CV on the validation set) over a wider grid. Fixed values are taken with
``--set dirichlet.lam=... --set dirichlet.mu=...``. The constrained forms are the other calibrators: W = I / T and
b = 0 is temperature scaling (softmax(ln q / T) = softmax(logits / T)); W diagonal is vector scaling of ln q.
The map can change the argmax. W, b and the chosen lam, mu are stored in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.methods.core.base import register
from bench.methods.core.options import Options, option
from bench.methods.matrix import LinearCalibrator, fit_affine

GRID = tuple(10.0 ** k for k in range(-2, 3))  # lam and mu candidates for the cross-validation
LOG_EPS = math.log(torch.finfo(torch.float64).eps)  # ln q is clipped below here (q >= 2.2e-16)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """ln softmax(logits) in float64, clipped below at ln(eps)."""
    return logits.double().log_softmax(1).clamp(min=LOG_EPS)


def cross_validate_odir(x: torch.Tensor, labels: torch.Tensor, lams: tuple[float, ...] = GRID,
                        mus: tuple[float, ...] = GRID, folds: int = 5, generator: torch.Generator | None = None,
                        max_iter: int = 500) -> tuple[float, float, dict[tuple[float, float], float]]:
    """(lam, mu) of the grid lams x mus with the lowest mean held-out NLL over ``folds`` random folds of
    (x, labels), and that NLL for every pair; ties keep the earlier pair (smaller lam, then smaller mu)."""
    n = len(labels)
    perm = torch.randperm(n, generator=generator)
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[perm] = torch.arange(n) % folds
    pairs = [(lam, mu) for lam in lams for mu in mus]
    nll = {pair: 0.0 for pair in pairs}
    for k in range(folds):
        hold = fold_of == k
        start = None  # each fit starts from the previous pair's optimum (the same optimum, reached sooner)
        for lam, mu in pairs:
            start = fit_affine(x[~hold], labels[~hold], lam=lam, mu=mu, max_iter=max_iter, init=start)
            w, b = start
            nll[(lam, mu)] += float(F.cross_entropy(x[hold] @ w.T + b, labels[hold], reduction="sum"))
    scores = {pair: total / n for pair, total in nll.items()}
    best = min(scores, key=lambda k: scores[k])  # min keeps the first of equal values
    return best[0], best[1], scores


@dataclass(frozen=True)
class DirichletConfig(Options):
    lam: float = option(-1.0, ge=0, also=(-1.0,))  # off-diagonal penalty; -1 = chosen by CV on the validation split
    mu: float = option(-1.0, ge=0, also=(-1.0,))  # intercept penalty; -1 = chosen by CV on the validation split
    folds: int = option(5, ge=2)  # cross-validation folds (when lam or mu is -1)
    max_iter: int = option(500, ge=1)  # L-BFGS iterations per fit


@register("dirichlet", "Post-hoc calibration: Dirichlet calibration softmax(W ln q + b) with ODIR, lam/mu by "
          "5-fold CV on validation (Kull et al. 2019); may change the argmax")
class DirichletCalibration(LinearCalibrator):
    Config = DirichletConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lam: float | None = None  # the penalties used for the final fit (chosen or given)
        self.mu: float | None = None

    @classmethod
    def preflight(cls, config: Any, net: torch.nn.Module, n_train: int) -> dict[str, Any]:
        out = super().preflight(config, net, n_train)
        if config.lam < 0 or config.mu < 0:
            out["cv_grid"] = list(GRID)  # the manifest says what the cross-validation chose from
        return out

    def _inputs(self, logits: torch.Tensor) -> torch.Tensor:
        return log_probs(logits)

    def _fit_map(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        lam, mu = cfg.lam, cfg.mu
        if lam < 0 or mu < 0:
            lams = GRID if lam < 0 else (lam,)
            mus = GRID if mu < 0 else (mu,)
            lam, mu, _ = cross_validate_odir(x, labels, lams, mus, cfg.folds, self.generator(7), cfg.max_iter)
        self.lam, self.mu = float(lam), float(mu)
        return fit_affine(x, labels, lam=self.lam, mu=self.mu, max_iter=cfg.max_iter)

    def _log_extra(self) -> dict[str, list[float]]:
        return {"odir_lam": [self.lam], "odir_mu": [self.mu]}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "lam": torch.tensor(self.lam, dtype=torch.float64),
                "mu": torch.tensor(self.mu, dtype=torch.float64)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.lam, self.mu = float(state["lam"]), float(state["mu"])
