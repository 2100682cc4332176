"""What the post-hoc OOD detectors share: the backbone's feature interface, the training features of a baseline
(computed once per baseline and cached), the last layer as (W, b), and the ``FeatureScorer`` template.

Features come only through the backbone interface every bench backbone implements (methods/core/backbones.py):
``forward_features(x) -> (N, F)`` (penultimate features) and ``forward_head(f) -> logits``. A detector file writes
``fit_features`` (statistics of the training features, once at fit) and ``confidence`` (higher = more trustworthy).
Where pytorch-ood has the detector, the detector file feeds it these features and flips its sign: pytorch-ood
scores higher = more OOD.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import NotFittedError, UsageError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training
from bench.methods.core.training import eval_mode, map_batches

CHUNK = 2048  # rows scored at once


def require_features(model: nn.Module, method: str) -> int:
    """The feature dimension F of ``model``, or a one-line UsageError when it has no penultimate features."""
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise UsageError(f"{method} needs penultimate features, but {type(model).__name__} has no forward_features/"
                         "forward_head; use a bench backbone (bench list backbones) or add both methods")
    with eval_mode(model), torch.inference_mode():
        p = next(model.parameters(), None)
        from bench.methods.core.backbones import MNIST_SHAPE  # a model built for a user's --data says its shape

        shape = getattr(model, "input_shape", MNIST_SHAPE)
        x = torch.zeros(2, *shape, device=p.device if p is not None else "cpu")
        try:
            f = model.forward_features(x)
        except NotImplementedError:
            f = None
    if not isinstance(f, torch.Tensor) or f.dim() != 2:
        got = "nothing" if f is None else f"shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise UsageError(f"{method} needs penultimate features (N, F) from {type(model).__name__}.forward_features, "
                         f"got {got}; make it return pooled, flattened features")
    return int(f.shape[1])


def linear_head(model: nn.Module, num_features: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, F), b (C,)) of the last layer, read through ``forward_head`` in eval mode: b = head(0) and column i of
    W = head(e_i) - b. Refused (UsageError) when the head is not affine in the features (ViM and DICE need W, b)."""
    with eval_mode(model), torch.inference_mode():
        p = next(model.parameters())
        eye = torch.eye(num_features, device=p.device, dtype=p.dtype)
        b = model.forward_head(torch.zeros(1, num_features, device=p.device, dtype=p.dtype))[0]
        w = (model.forward_head(eye) - b).T.contiguous()
        probe = torch.rand(8, num_features, generator=torch.Generator().manual_seed(0)).to(p.device) * 4
        out = model.forward_head(probe)
        affine = torch.allclose(out, probe @ w.T + b, rtol=1e-4, atol=1e-4 * (1 + float(out.abs().max())))
    if not affine:
        raise UsageError(f"{method} needs a linear last layer (forward_head affine in the features); "
                         f"{type(model).__name__}'s is not")
    return w.float().cpu(), b.float().cpu()


def train_features(ctx: FitContext, model: nn.Module, baseline_key: str | None, train: ImageSet
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F) float32, labels (N,)) of the training split on CPU, computed once per baseline: cached in
    the checkpoint cache under the baseline's key, so every detector of that baseline (in any worker) reuses them."""
    key = f"features-{baseline_key}" if baseline_key else None
    with (ctx._locked(key) if key else contextlib.nullcontext()):
        hit = None if (ctx.cache is None or key is None) else ctx.cache.get(key)
        if hit is not None:
            return hit["features"], hit["labels"]
        f, y = map_batches(lambda x: model.forward_features(x).float(), model, train, ctx.device)
        f, y = f.cpu().contiguous(), y.cpu().long()
        if ctx.cache is not None and key is not None:
            ctx.cache.put(key, {"features": f, "labels": y})
    return f, y


class FeatureScorer(ConfidenceMethod):
    """Post-hoc detector on the cached baseline's penultimate features. Subclasses set ``fits_on_train`` and
    implement ``fit_features`` (training statistics; also rebuild from ``extra_state``) and ``confidence``."""

    training = Training.SHARED_BASELINE
    posthoc = True
    uses_features = True
    needs_features = True  # a user's model without penultimate features is refused up front (bench.evaluate)
    #: True if the detector learns statistics of the training features (Mahalanobis, KNN, ViM, ReAct, DICE).
    fits_on_train: ClassVar[bool] = True
    #: True if the detector needs the last layer as (W, b) (ViM, DICE).
    needs_linear_head: ClassVar[bool] = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state: dict[str, torch.Tensor] | None = None  # fitted statistics (CPU tensors), what extra_state holds

    @classmethod
    def preflight(cls, config: Any, net: nn.Module, n_train: int) -> dict[str, Any]:
        f = require_features(net, cls.name)
        if cls.needs_linear_head:
            linear_head(net, f, cls.name)
        return {**dataclasses.asdict(config), **cls.derived(config, f, n_train)}

    @classmethod
    def derived(cls, config: Any, num_features: int, n_train: int) -> dict[str, Any]:
        """Hyper-parameters derived from the feature dimension / training-set size (checked here, before any
        training); override to add or check some."""
        return {}

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        num_features = require_features(model, self.name)
        self.derived(self.config, num_features, len(train))  # the same one-line checks as preflight
        state: dict[str, torch.Tensor] = {}
        if self.needs_linear_head:
            state["w"], state["b"] = linear_head(model, num_features, self.name)
        if self.fits_on_train:
            f, y = train_features(ctx, model, self.baseline_key, train)
            state.update(self.fit_features(f, y, state))
        self._set_state(state)

    def fit_features(self, features: torch.Tensor, labels: torch.Tensor, state: dict[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
        """Statistics of the training features (CPU tensors), stored in the checkpoint."""
        return {}

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Adopt fitted statistics (after fit or on checkpoint load); override to rebuild a pytorch-ood detector."""
        self.state = state

    def confidence(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_features(self, features: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.state is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() or load_state_dict() first")
        # the classifier's prediction is the baseline's: only the confidence is the detector's. Chunks bound the
        # memory of scorers with per-image intermediates (DICE's (n, C, F) votes, k-NN distances).
        conf = [self.confidence(features[i : i + CHUNK], logits[i : i + CHUNK]).to(logits.device, torch.float32)
                for i in range(0, len(features), CHUNK)]
        return logits.softmax(1), torch.cat(conf) if conf else torch.empty(0)

    def predict_from_features(self, features: torch.Tensor, logits: torch.Tensor):
        # eval mode for the scorers that run modified features through the head (its dropout must be off)
        with eval_mode(self._fitted_model()):
            return super().predict_from_features(features, logits)

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._fitted_model()
        f = model.forward_features(x)
        return self.score_features(f.float(), model.forward_head(f).float())

    def head_on(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of modified features through the real last layer (ReAct, ASH, SCALE change the features)."""
        model = self._fitted_model()
        p = next(model.parameters())
        return model.forward_head(features.flatten(1).to(p.device, p.dtype)).to(features.device).float()

    def extra_state(self) -> dict[str, Any]:
        if self.state is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() first")
        return dict(self.state)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._set_state(dict(state))


class FeatureMapDetector(FeatureScorer):
    """A pytorch-ood detector that scores feature maps through the real last layer (ReAct, ASH, SCALE): the
    penultimate features go in as (N, F, 1, 1) maps and its score (higher = more OOD) is negated into a
    confidence. Subclasses build the detector from the fitted state."""

    def build_detector(self, state: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._set_state(state)
        self._detector = self.build_detector(state)

    def confidence(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -self._detector.predict_feature_maps(features[:, :, None, None])


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy logsumexp(logits): the confidence ReAct, ASH, SCALE, DICE put on their logits
    (= minus pytorch-ood's ``EnergyBased.score``)."""
    return torch.logsumexp(logits, dim=1)
