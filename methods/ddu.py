"""DDU, deep deterministic uncertainty (Mukhoti, Kirsch, van Amersfoort, Torr & Gal, CVPR 2023; code
omegafragger/DDU, utils/gmm_utils.py).

A classifier with a spectral-normalised residual feature extractor (the ``sn-resnet`` backbone, methods/core/sn_nets.py)
trained with plain cross-entropy (the run's recipe: it is the cached baseline of that backbone, shared with e.g.
``msp --backbone sn-resnet``), then Gaussian discriminant analysis on its training features: per class c a mean mu_c
and a full covariance S_c (unbiased), fitted once after training, in float64. Where a covariance is not positive
definite, the same jitter eps * I is added to all of them, eps the first of 0, 1e-12, 1e-11, ..., 1 for which every
Cholesky succeeds (the reference walks 0, tiny, 1e-308, ..., 0.1; its first successes are ours in practice).

Scores (``ddu.score``): ``density`` (default; the paper's OOD score) = log q(z) = logsumexp_c log N(z; mu_c, S_c),
no class prior, as the reference; ``softmax`` = the classifier's max softmax probability, the paper's score for
aleatoric uncertainty / misclassification. Both come from one fit: ``score`` is left out of the checkpoint key, so a
second run with ``--set ddu.score=softmax`` reuses the checkpoint. Probabilities are always the softmax.
``ddu.net`` names the backbone (default ``sn-resnet``; "" = the run's ``--backbone``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import TrainingError
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches

SCORES = ("density", "softmax")
JITTERS = [0.0] + [10.0 ** e for e in range(-12, 1)]


@dataclass(frozen=True)
class DDUConfig(Options):
    score: str = option("density", one_of=SCORES)  # confidence: GDA log-density (OOD) or softmax MCP (errors)
    net: str = "sn-resnet"  # the backbone trained with CE; "" = the run's --backbone


def fit_gda(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Class means (C, F), Cholesky factors (C, F, F) of the jittered class covariances, and the jitter, in
    float64. A class without two training points cannot have a covariance: refused with one line."""
    f = features.double()
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) < 2:
        raise TrainingError(f"ddu: class {int(counts.argmin())} has {int(counts.min())} training point(s); the "
                            "Gaussian of each class needs at least 2")
    means = torch.stack([f[labels == c].mean(0) for c in range(num_classes)])
    covs = torch.stack([(f[labels == c] - means[c]).T @ (f[labels == c] - means[c]) / (counts[c] - 1)
                        for c in range(num_classes)])
    eye = torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
    for eps in JITTERS:
        chol, info = torch.linalg.cholesky_ex(covs + eps * eye)
        if int(info.abs().max()) == 0:
            return {"means": means.cpu(), "chol": chol.cpu(), "jitter": eps}
    raise TrainingError("ddu: the class covariances stay singular even with jitter 1; the features are degenerate")


def class_log_densities(z: torch.Tensor, means: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """(N, C): log N(z; mu_c, L_c L_c^T) for every class, in float64."""
    diff = z.double()[:, None, :] - means[None]  # (N, C, F)
    # L_c^-1 (z - mu_c) for every class at once: solve with the (C, F, F) factors broadcast over N
    sol = torch.linalg.solve_triangular(chol[None], diff[..., None], upper=False).squeeze(-1)
    half_logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (C,)
    return -0.5 * sol.pow(2).sum(-1) - half_logdet - 0.5 * means.shape[1] * math.log(2 * math.pi)


@register("ddu", "DDU: spectral-normalised ResNet + class-conditional Gaussians on its features (Mukhoti et al. "
          "2023); feature log-density or softmax")
class DDU(ConfidenceMethod):
    Config = DDUConfig
    training = Training.FROZEN_BASELINE  # the CE-trained sn-resnet is the cached baseline; the GDA is what it adds
    grid_weight = 3.8  # scheduling hint, in baseline trainings (lenet): sn-resnet epoch / lenet epoch, smoke run (docs)
    needs_features = True

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.gda: dict[str, Any] | None = None

    @property
    def net(self) -> str:
        return self.config.net or self.backbone

    def cache_key(self, ctx: FitContext) -> str:
        """The checkpoint does not depend on ``score`` (inference only): both scores share one fit."""
        keyed = copy.copy(self)
        keyed.config = dataclasses.replace(self.config, score=DDUConfig.score)
        return ConfidenceMethod.cache_key(keyed, ctx)

    def build_model(self) -> nn.Module:
        return create_backbone(self.net, self.num_classes, shape=self.shape)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        model, log, self.baseline_key = ctx.train_baseline(self.net, self.num_classes, self.seed, train, val)
        features, labels = map_batches(model.forward_features, model, train, ctx.device)
        self.gda = fit_gda(features, labels, self.num_classes)
        # a single fact, as temperature's T; a copy, so the baseline's own log is left as it was
        self.train_log = dataclasses.replace(log, extra={**log.extra, "gda_jitter": [self.gda["jitter"]]})
        self.model = model

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._fitted_model()
        f = model.forward_features(x)
        probs = model.forward_head(f).softmax(1)
        if self.config.score == "softmax":
            return probs, probs.max(1).values
        gda = self.gda
        log_dens = class_log_densities(f, gda["means"].to(f.device), gda["chol"].to(f.device))
        return probs, log_dens.logsumexp(1).float()

    def extra_state(self) -> dict[str, Any]:
        return dict(self.gda) if self.gda is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.gda = dict(state) if state else None
