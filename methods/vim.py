"""ViM, virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022), post-hoc on the baseline's penultimate
features and last layer.

Origin u = -W^+ b (W, b: the last layer, read through ``forward_head``); the principal subspace is spanned by the
``dim`` leading eigenvectors of the covariance of the training features about u; the residual norm
||(f - u)^{P-perp}|| times alpha = mean max-logit / mean residual norm (both over the training split) is the virtual
logit. Implementation: pytorch-ood's ``ViM`` (``fit_features`` / ``predict_features``), sign flipped:

    confidence = logsumexp(logits) - alpha * ||(f - u)^{P-perp}||

``dim`` = 0 (default) picks the principal dimension by the authors' rule (code of haoqiwang/vim, benchmark.py):
1000 for F >= 2048, 512 for 512 < F < 2048, and F // 2 below, which is pytorch-ood's fallback and OpenOOD v1.5's
choice (256 of 512) for CIFAR ResNet-18; lenet (F = 50) gets 25. The value used is in the run manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_ood.detector import ViM as _ViM

from bench.errors import UsageError
from bench.methods.core.base import register
from bench.methods.core.features import FeatureScorer
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class ViMConfig(Options):
    dim: int = option(0, ge=0)  # principal-subspace dimension; 0 = the authors' rule from the feature dimension


def principal_dim(num_features: int) -> int:
    """The authors' rule (1000 if F >= 2048, 512 if F > 512), F // 2 for the small features it does not cover."""
    return 1000 if num_features >= 2048 else 512 if num_features > 512 else num_features // 2


@register("vim", "Post-hoc: energy minus a virtual logit from the principal-space residual (Wang et al. 2022; "
          "pytorch-ood)")
class ViM(FeatureScorer):
    Config = ViMConfig
    needs_linear_head = True

    @classmethod
    def derived(cls, config, num_features, n_train):
        dim = config.dim or principal_dim(num_features)
        if not 0 < dim < num_features:
            raise UsageError(f"vim.dim={dim} must be between 1 and the feature dimension - 1 ({num_features - 1}); "
                             "use --set vim.dim=0 for the automatic choice")
        return {"dim_used": dim}

    def fit_features(self, features, labels, state):
        dim = self.derived(self.config, features.shape[1], len(features))["dim_used"]
        d = _ViM(None, d=dim, w=state["w"], b=state["b"]).fit_features(features, labels)
        return {"residual_basis": d.principal_subspace.cpu(), "alpha": torch.tensor(d.alpha)}

    def _set_state(self, state):
        super()._set_state(state)
        d = _ViM(None, d=state["residual_basis"].shape[0] - state["residual_basis"].shape[1], w=state["w"],
                 b=state["b"])
        d.principal_subspace, d.alpha = state["residual_basis"], float(state["alpha"])
        self._detector = d

    def confidence(self, features, logits):
        d = self._detector
        # pytorch-ood recomputes the logits from (W, b): the same ones, as the head is checked to be affine
        return -d.predict_features(features.to(d.w.device)).to(features.device)
