"""Evidential deep learning (Sensoy, Kaplan & Kandemir, NeurIPS 2018): the network's outputs are evidence for a
Dirichlet over the class probabilities.

evidence e = ReLU(z) (the paper's choice; softplus and exp(clamp(z, -10, 10)) are offered, ``edl.evidence``),
alpha = e + 1, S = sum_k alpha_k, expected probabilities p = alpha / S, uncertainty u = K / S (K classes).
Loss per sample (the paper's eq. 5, the expected squared error under Dir(alpha)):

    sum_k (y_k - p_k)^2 + p_k (1 - p_k) / (S + 1)

plus lambda_t * KL(Dir(alpha~) || Dir(1, ..., 1)) with alpha~ = y + (1 - y) * alpha (the evidence of the true class
removed, so only misleading evidence is penalised) and lambda_t = min(1, t / 10), t the 0-based epoch index (first
epoch unregularised), as the paper and the PyTorch port dougbrion/pytorch-classification-uncertainty.
Confidence (``edl.score``): ``uncertainty`` (default) = 1 - K / S, EDL's own quantity (higher = more evidence), or
``max_prob`` = max_k alpha_k / S. Both come from one fit: ``score`` is left out of the checkpoint key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.datasets.mnist import ImageSet
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import fit_loop

EVIDENCE = ("relu", "softplus", "exp")
SCORES = ("uncertainty", "max_prob")


@dataclass(frozen=True)
class EDLConfig(Options):
    evidence: str = option("relu", one_of=EVIDENCE)  # z -> evidence >= 0 (paper: ReLU)
    kl_epochs: int = option(10, ge=1)  # lambda_t = min(1, t / kl_epochs) (paper: 10)
    score: str = option("uncertainty", one_of=SCORES)  # confidence: 1 - K/S, or max expected probability
    epochs: int = option(0, ge=0)  # 0 = the run's train.epochs


def evidence_of(z: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return F.relu(z)
    if kind == "softplus":
        return F.softplus(z)
    return torch.exp(z.clamp(-10, 10))  # clamped as the PyTorch port, so the evidence cannot overflow


def mse_loss(alpha: torch.Tensor, y1h: torch.Tensor) -> torch.Tensor:
    """Per-sample expected squared error under Dir(alpha) (eq. 5): error of the mean plus the variance."""
    s = alpha.sum(1, keepdim=True)
    p = alpha / s
    return ((y1h - p) ** 2 + p * (1 - p) / (s + 1)).sum(1)


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(Dir(alpha) || Dir(1, ..., 1))."""
    k = alpha.shape[1]
    s = alpha.sum(1)
    return (torch.lgamma(s) - math.lgamma(k) - torch.lgamma(alpha).sum(1)
            + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(s)[:, None])).sum(1))


def edl_loss(z: torch.Tensor, y: torch.Tensor, kind: str, coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean total loss, mean KL term) of logits ``z`` against labels ``y`` with annealing coefficient ``coef``."""
    alpha = evidence_of(z, kind) + 1
    y1h = F.one_hot(y, alpha.shape[1]).to(alpha.dtype)
    kl = kl_to_uniform(y1h + (1 - y1h) * alpha)
    return (mse_loss(alpha, y1h) + coef * kl).mean(), kl.mean()


@register("edl", "Evidential deep learning: Dirichlet from ReLU evidence, eq. 5 MSE + annealed KL (Sensoy et al. "
          "2018); 1 - K/S or max alpha/S")
class EDL(ConfidenceMethod):
    Config = EDLConfig
    training = Training.OWN
    grid_weight = 1.0  # scheduling hint, in baseline trainings: one plain training, only the loss differs

    def cache_key(self, ctx: FitContext) -> str:
        """The checkpoint does not depend on ``score`` (inference only): both scores share one fit."""
        keyed = copy.copy(self)
        keyed.config = dataclasses.replace(self.config, score=EDLConfig.score)
        return ConfidenceMethod.cache_key(keyed, ctx)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg = self.config
        recipe, model, stepper = self.new_training(ctx, train, cfg.epochs)

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
            coef = min(1.0, (epoch - 1) / cfg.kl_epochs)  # fit_loop's epochs are 1-based, the paper's t 0-based
            loss, kl = edl_loss(model(x), y, cfg.evidence, coef)
            return {"loss": stepper(loss), "train_kl": kl.detach()}

        self.train_log = fit_loop(model, step, train, val, recipe, self.loop(ctx),
                                  resume=ctx.epoch_resume(self.cache_key(ctx), stepper))
        self.model = model

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = evidence_of(logits, self.config.evidence) + 1
        s = alpha.sum(1)
        probs = alpha / s[:, None]
        if self.config.score == "uncertainty":
            return probs, 1 - alpha.shape[1] / s
        return probs, probs.max(1).values
