"""GEN, generalized entropy (Liu, Lochman & Zach, CVPR 2023), post-hoc on the baseline logits.

    G(p) = sum over the M largest p_j of  p_j^gamma (1 - p_j)^gamma,      confidence = -G

gamma = 0.1 and M = 100 (the paper's setting; M is capped at the number of classes, so all 10 on MNIST).

Own implementation, not pytorch-ood's ``GEN``: pytorch-ood clamps the probabilities to [1e-7, 1 - 1e-7] before the
power, so every image whose runner-up classes are below 1e-7 (a logit gap above ~16, most MNIST test digits on a
trained net) gets the very same score: confidence ties that wipe out the ranking GEN exists to give among
confident predictions (tests/test_detectors.py::test_gen_pytorch_ood_clamp_ties shows it). Here each term is
computed in log space, log p_j + log(1 - p_j), with log(1 - p_top) = logsumexp of the other logits minus the
logsumexp of all of them, so no clamp is needed. pytorch-ood also averages over the M terms instead of summing
them (a constant factor, same ranking); we sum, as the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import ConfidenceMethod, Training, register
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class GENConfig(Options):
    gamma: float = option(0.1, gt=0)  # Liu et al. 2023
    M: int = option(100, ge=1)  # top-M probabilities (paper, ImageNet); capped at the number of classes


def generalized_entropy(logits: torch.Tensor, gamma: float, m: int) -> torch.Tensor:
    """sum_{j in top-M} p_j^gamma (1 - p_j)^gamma of softmax(logits), computed in log space (float64)."""
    z = logits.double()
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    log_p = z - lse
    # log(1 - p_j): log1p(-p_j) is accurate for p_j <= 1/2; only the top class can exceed 1/2, and for it
    # 1 - p_top is the mass of the others, logsumexp(others) - lse, which never rounds to log(0)
    log_q = torch.log1p(-log_p.exp().clamp(max=0.5))
    top = z.argmax(1, keepdim=True)
    others = z.scatter(1, top, float("-inf"))
    log_q_top = torch.logsumexp(others, dim=1, keepdim=True) - lse
    log_q = torch.where(log_p.exp() > 0.5, log_q_top.expand_as(log_q), log_q)
    terms = (gamma * (log_p + log_q)).exp()
    k = min(m, z.shape[1])
    keep = log_p.topk(k, dim=1).indices
    return terms.gather(1, keep).sum(1)


@register("gen", "Post-hoc: negative generalized entropy of the top-M softmax probabilities (Liu et al. 2023)")
class GEN(ConfidenceMethod):
    Config = GENConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = generalized_entropy(logits, self.config.gamma, self.config.M)
        return logits.softmax(1), (-g).float()
