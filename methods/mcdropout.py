"""MC-dropout (Gal & Ghahramani 2016): dropout kept on at test time, T stochastic passes.

Reuses the baseline checkpoint of the same backbone and seed (it only changes inference). Only dropout modules
are switched to train mode during the passes; batch norm stays in eval mode. The returned probabilities are the
mean of the T softmaxes. Confidence variants: ``mcp`` (max of the mean softmax), ``entropy`` (negative predictive
entropy, what ConfidNet's code scores), ``mi`` (negative mutual information between prediction and weights).

Cost floor: the layers before a network's first dropout give the same output on every pass. A backbone that declares
its stochastic tail (``stochastic_tail``, ``forward_prefix``, ``forward_tail``; see methods/core/backbones.py) has the
prefix computed once per batch and only the tail run T times, as one batched call over T copies of the prefix
output (chunked to bound memory). Same model, same predictive distribution; the dropout masks are drawn in another
order than by T full passes, so the sampled numbers differ by Monte-Carlo noise. Other models keep T full passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import UsageError
from bench.methods.core.base import ConfidenceMethod, Training, register
from bench.methods.core.options import Options, option

VARIANTS = ("mcp", "entropy", "mi")


@dataclass(frozen=True)
class MCDropoutConfig(Options):
    passes: int = option(50, ge=1)  # T; 50 as in ConfidNet's code
    variant: str = option("mcp", one_of=VARIANTS)


#: elements of the repeated prefix output per batched tail call: bounds memory (SmallConvNet's 9,216 values x 2,048
#: images x 50 passes would be 3.8 GB at once) while keeping each call large enough to amortise per-call overhead
TAIL_CHUNK_ELEMENTS = 1 << 23


def full_passes(model: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """Softmax of ``passes`` whole forward passes, (T, N, C)."""
    return torch.stack([model(x).softmax(1) for _ in range(passes)])


def tail_passes(model: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """The same samples from the deterministic prefix once and the stochastic tail on T stacked copies of it;
    row ``t * N + i`` of a chunk is pass t of image i."""
    h = model.forward_prefix(x)
    n = len(h)
    per_chunk = max(1, min(passes, TAIL_CHUNK_ELEMENTS // max(h.numel(), 1)))
    out = []
    for start in range(0, passes, per_chunk):
        k = min(per_chunk, passes - start)
        hk = h.expand(k, *h.shape).reshape(k * n, *h.shape[1:])
        out.append(model.forward_tail(hk).softmax(1).view(k, n, -1))
    return torch.cat(out)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


@register("mcdropout", "MC-dropout: T passes with dropout on; confidence mean-MCP, -entropy or -mutual information")
class MCDropout(ConfidenceMethod):
    Config = MCDropoutConfig
    training = Training.SHARED_BASELINE
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
        sample = tail_passes if getattr(model, "stochastic_tail", False) else full_passes
        samples = sample(model, x, self.config.passes)  # (T, N, C)
        mean = samples.mean(0)
        if self.config.variant == "mcp":
            conf = mean.max(1).values
        elif self.config.variant == "entropy":
            conf = -_entropy(mean)
        else:  # mutual information = H(mean) - mean of H(sample)
            conf = -(_entropy(mean) - _entropy(samples).mean(0))
        return mean, conf
