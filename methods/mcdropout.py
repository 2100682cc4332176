"""MC-dropout (Gal & Ghahramani 2016): dropout kept on at test time, T stochastic passes.

Reuses the baseline checkpoint of the same backbone and seed (it only changes inference). Only dropout modules
are switched to train mode during the passes; batch norm stays in eval mode. The returned probabilities are the
mean of the T softmaxes. Confidence variants: ``mcp`` (max of the mean softmax), ``entropy`` (negative predictive
entropy, what ConfidNet's code scores), ``mi`` (negative mutual information between prediction and weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import UsageError
from bench.methods.base import ConfidenceMethod, register

VARIANTS = ("mcp", "entropy", "mi")


@dataclass(frozen=True)
class MCDropoutConfig:
    passes: int = 50  # T; 50 as in ConfidNet's code
    variant: str = "mcp"

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise UsageError(f"mcdropout.passes must be >= 1, got {self.passes}")
        if self.variant not in VARIANTS:
            raise UsageError(f"mcdropout.variant {self.variant!r} is not one of {', '.join(VARIANTS)}")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


@register("mcdropout", "MC-dropout: T passes with dropout on; confidence mean-MCP, -entropy or -mutual information")
class MCDropout(ConfidenceMethod):
    Config = MCDropoutConfig
    needs_dropout = True
    stochastic = True

    @property
    def forward_passes(self) -> int:
        return self.config.passes

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._fitted_model()
        dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if not dropouts:
            raise UsageError(f"mcdropout needs a backbone with dropout layers; {self.backbone} has none")
        for m in dropouts:
            m.train()  # the base class restores every module's mode afterwards
        samples = torch.stack([model(x).softmax(1) for _ in range(self.config.passes)])  # (T, N, C)
        mean = samples.mean(0)
        if self.config.variant == "mcp":
            conf = mean.max(1).values
        elif self.config.variant == "entropy":
            conf = -_entropy(mean)
        else:  # mutual information = H(mean) - mean of H(sample)
            conf = -(_entropy(mean) - _entropy(samples).mean(0))
        return mean, conf
