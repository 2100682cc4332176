"""Histogram binning (Zadrozny & Elkan, ICML 2001) of the baseline classifier, one-vs-rest with renormalisation.

For each class k, the validation split's softmax probabilities p_k are cut into ``bins`` bins and each bin gets the
fraction of its validation images whose label is k; at test time p_k is replaced by its bin's value q_k, and the
probabilities become q / sum(q) (Guo et al. 2017's multi-class extension: K one-vs-rest problems, then normalise),
the confidence their maximum. Bins: 15 equal-width, right-closed (0, 1/15], ..., (14/15, 1] (0 goes into the
first) by default, as the metric's ECE bins and the 15 bins of the Dirichlet-calibration authors' binning code;
``binning=mass`` cuts at the quantiles of p_k instead (equal-frequency bins, Zadrozny & Elkan's choice, who used
10). A bin with no validation image gets its midpoint (no evidence: keep the raw probability's scale); a test image
whose q is 0 for every class keeps its uncalibrated probabilities. The renormalised map can change the argmax, and
it ties many confidences (one value per bin combination). Bin edges and values are stored in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import register
from bench.methods.core.options import Options, option
from bench.methods.matrix import ValidationCalibrator


@dataclass(frozen=True)
class HistBinConfig(Options):
    bins: int = option(15, ge=1)  # bins per class
    binning: str = option("width", one_of=("width", "mass"))  # equal-width bins, or equal-mass (quantile) bins


def bin_index(edges: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per class k (row of ``edges`` (C, B + 1), column of ``p`` (N, C)), the right-closed bin of p[:, k]:
    (N, C) indices in 0..B-1, a value of 0 (or below the first edge) in bin 0."""
    idx = torch.searchsorted(edges.contiguous(), p.T.contiguous(), right=False) - 1
    return idx.clamp(0, edges.shape[1] - 2).T


def fit_histogram_binning(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15, binning: str = "width"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(edges (C, bins + 1), values (C, bins)), float64: one-vs-rest bins of each class's probability and the
    fraction of label-k images in each; an empty bin's value is its midpoint."""
    p = probs.double().cpu()
    n, c = p.shape
    if binning == "width":
        edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64).expand(c, -1).clone()
    else:
        q = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
        edges = torch.quantile(p, q, dim=0).T.contiguous()  # (C, bins + 1)
        edges[:, 0], edges[:, -1] = 0.0, 1.0  # the outer bins reach the ends of [0, 1]
    idx = bin_index(edges, p)  # (N, C)
    onehot = torch.zeros(n, c, dtype=torch.float64)
    onehot[torch.arange(n), labels.cpu().long()] = 1.0
    count = torch.zeros(c, bins, dtype=torch.float64).scatter_add_(1, idx.T, torch.ones(c, n, dtype=torch.float64))
    hits = torch.zeros(c, bins, dtype=torch.float64).scatter_add_(1, idx.T, onehot.T.contiguous())
    mid = (edges[:, :-1] + edges[:, 1:]) / 2
    values = torch.where(count > 0, hits / count.clamp(min=1), mid)
    return edges, values


def renormalise(q: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """q / sum(q) per row; rows whose q sums to 0 take ``fallback`` (the uncalibrated probabilities)."""
    s = q.sum(1, keepdim=True)
    return torch.where(s > 0, q / s.clamp(min=torch.finfo(q.dtype).tiny), fallback)


@register("histbin", "Post-hoc calibration: histogram binning, one-vs-rest (15 equal-width bins) + renormalisation "
          "(Zadrozny & Elkan 2001); may change the argmax")
class HistogramBinning(ValidationCalibrator):
    Config = HistBinConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edges: torch.Tensor | None = None  # (C, bins + 1)
        self.values: torch.Tensor | None = None  # (C, bins)

    def _fit_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.double().softmax(1)
        self.edges, self.values = fit_histogram_binning(probs, labels, self.config.bins, self.config.binning)

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.edges is None or self.values is None:
            raise self._not_fitted()
        p = logits.double().softmax(1)
        edges, values = self.edges.to(p.device), self.values.to(p.device)
        q = values.gather(1, bin_index(edges, p).T).T  # q[i, k] = values[k, bin of p[i, k]]
        probs = renormalise(q, p).float()
        return probs, probs.max(1).values

    def extra_state(self) -> dict[str, torch.Tensor]:
        if self.edges is None or self.values is None:
            raise self._not_fitted()
        return {"edges": self.edges, "values": self.values}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.edges, self.values = state["edges"].double().cpu(), state["values"].double().cpu()
