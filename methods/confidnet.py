"""ConfidNet (Corbiere, Thome, Bar-Hen, Cord & Perez, NeurIPS 2019; code valeoai/ConfidNet).

Phase 1: the cached baseline classifier is frozen; a head of 5 dense layers (F->400->400->400->400->1, ReLU
between, sigmoid output) reads its penultimate features (``backbone.forward_features``) and is trained with the
mean squared error to the true-class probability TCP = softmax(logits)[y] (optionally errors weighted by
``error_weight``, the reference's ``weighting``, 1 by default). As in the reference's SelfConfidLearner the model
is in train mode during phase 1 apart from batch norm, so the backbone's dropout stays ON (``backbone_dropout``;
set false to train on clean features). As there, the head reads the features *after* the classifier's last dropout
(``backbone.head_dropout``), the very vector the last layer turns into the TCP target, so the target is a function
of what the head sees; at evaluation the dropout is off and the head reads the clean features.
Head optimiser Adam lr 1e-4, batch = the run's batch size (128 in the paper profile); the epoch kept is the one
with the best validation AUPR-Error (errors positive, score -confidence), ties keep the earlier.

Phase 2 (optional, ``finetune_epochs`` > 0): a copy of the encoder (the whole backbone; only its features are
used) is fine-tuned jointly with the head, with dropout OFF everywhere (the reference's ``disable_dropout`` when
an ``uncertainty`` checkpoint is given), still against the frozen original classifier's TCP; the prediction
always comes from the original classifier. Model selection again by validation AUPR-Error.

Epochs: ``head_epochs`` is the head's own budget. Default 20, a budget choice so that CPU runs stay short;
the reference's ConfidNet template trains the head for up to 500 epochs and keeps the best validation epoch.
The reproduction in docs/confidnet-reproduction.md says which value it used.

Confidence = the sigmoid output (an estimate of TCP); probabilities = the baseline softmax.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.metrics import average_precision
from bench.methods.backbones import create_backbone
from bench.methods.base import ConfidenceMethod, FitContext, register
from bench.methods.training import Stepper, TrainLog, TrainRecipe, batches, fit_loop


@dataclass(frozen=True)
class ConfidNetConfig:
    head_epochs: int = 20  # the head's own epochs (reference template: 500); see the module docstring
    head_lr: float = 1e-4  # Adam, as the reference
    hidden: int = 400
    error_weight: float = 1.0  # reference ``loss.weighting``: MSE weight of misclassified samples
    backbone_dropout: bool = True  # phase 1 keeps the classifier's dropout on (reference: model.train())
    finetune_epochs: int = 0  # phase 2 (encoder copy fine-tuned, dropout off); 0 = off
    finetune_lr: float = 1e-5  # our default for phase 2 (Adam); not a value taken from the reference

    def __post_init__(self) -> None:
        for name in ("head_epochs", "hidden"):
            if getattr(self, name) < 1:
                raise UsageError(f"confidnet.{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise UsageError(f"confidnet.finetune_epochs must be >= 0 (0 = no phase 2), got {self.finetune_epochs}")
        for name in ("head_lr", "finetune_lr", "error_weight"):
            if not getattr(self, name) > 0:
                raise UsageError(f"confidnet.{name} must be > 0, got {getattr(self, name)}")


def confidence_head(in_features: int, hidden: int = 400) -> nn.Sequential:
    """F -> hidden x4 -> 1 with ReLU between; returns the pre-sigmoid score."""
    dims = [in_features, hidden, hidden, hidden, hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1))


class ConfidNetModel(nn.Module):
    """The frozen classifier, the confidence head and (phase 2) the fine-tuned encoder copy.
    ``forward`` is the classifier (images -> logits), what white-box attacks differentiate."""

    def __init__(self, backbone: nn.Module, hidden: int, encoder: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = confidence_head(backbone.num_features, hidden)
        self.encoder = encoder
        self.phase = 1
        self.backbone_dropout = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def confidence(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.encoder is not None:
            features = self.encoder.forward_features(x)
        elif features is None:
            features = self.backbone.forward_features(x)
        return torch.sigmoid(self.head(features)).squeeze(1)

    def train(self, mode: bool = True) -> "ConfidNetModel":
        """Training mode as the reference learner: batch norm always frozen; phase 1 keeps dropout on in the
        classifier (if ``backbone_dropout``), phase 2 turns every dropout off."""
        super().train(mode)
        if mode:
            for m in self.modules():
                is_dropout = isinstance(m, nn.modules.dropout._DropoutNd)
                if isinstance(m, nn.modules.batchnorm._BatchNorm) or (
                        is_dropout and (self.phase == 2 or not self.backbone_dropout)):
                    m.eval()
        return self


@register("confidnet", "ConfidNet: MLP head on frozen features regressing the true-class probability (2019)")
class ConfidNet(ConfidenceMethod):
    Config = ConfidNetConfig
    frozen_classifier = True  # trains only its head on the frozen baseline
    needs_features = True
    training_version = 1  # 1: the head reads the post-dropout features (before: the clean ones)

    def build_model(self) -> nn.Module:
        backbone = create_backbone(self.backbone, self.num_classes)
        encoder = copy.deepcopy(backbone) if self.config.finetune_epochs > 0 else None
        return ConfidNetModel(backbone, self.config.hidden, encoder)

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net: ConfidNetModel = self._fitted_model()  # type: ignore[assignment]
        f = net.backbone.forward_features(x)
        return net.backbone.forward_head(f).softmax(1), net.confidence(x, f)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg = self.config
        backbone, base_log, self.baseline_key = ctx.train_baseline(self.backbone, self.num_classes, self.seed,
                                                                   train, val)
        torch.manual_seed(self.seed)
        net = ConfidNetModel(backbone, cfg.hidden).to(ctx.device)
        net.backbone_dropout = cfg.backbone_dropout
        for p in net.backbone.parameters():
            p.requires_grad_(False)
        self.model = net
        logs = [self._phase(net, train, val, ctx, 1, cfg.head_epochs, cfg.head_lr, list(net.head.parameters()))]
        if cfg.finetune_epochs > 0:
            net.encoder = copy.deepcopy(net.backbone)
            for p in net.encoder.parameters():
                p.requires_grad_(True)
            net.phase = 2
            params = list(net.encoder.parameters()) + list(net.head.parameters())
            logs.append(self._phase(net, train, val, ctx, 2, cfg.finetune_epochs, cfg.finetune_lr, params))
        net.phase = 1
        for p in net.backbone.parameters():
            p.requires_grad_(True)  # frozen by the optimiser choice; attacks may need parameter grads
        self.train_log = merge(base_log, logs)

    def _phase(self, net: ConfidNetModel, train: ImageSet, val: ImageSet, ctx: FitContext, phase: int,
               epochs: int, lr: float, params: list[nn.Parameter]) -> TrainLog:
        """Train ``params`` for ``epochs`` with the TCP regression; keep the best validation AUPR-Error."""
        net.phase = phase
        recipe = TrainRecipe(optimizer="adam", lr=lr, batch_size=ctx.recipe.batch_size, epochs=epochs,
                             val_every=epochs)  # fit_loop's accuracy check is meaningless here (frozen classifier)
        stepper = Stepper(params, recipe, math.ceil(len(train) / recipe.batch_size))
        w_err = self.config.error_weight

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
            with torch.no_grad():
                # one dropout draw shared by the head's input and the TCP target (phase 1, as the reference)
                d = net.backbone.head_dropout(net.backbone.forward_features(x))
                probs = net.backbone.forward_classifier(d).softmax(1)
                tcp = probs.gather(1, y[:, None]).squeeze(1)
                weight = torch.where(probs.argmax(1) == y, 1.0, w_err)
            conf = net.confidence(x, d)  # phase 2: the encoder copy's features, with gradients
            return stepper((weight * (conf - tcp) ** 2).mean())

        best = {"score": self._val_aupr_error(net, val, ctx.device), "state": copy.deepcopy(net.state_dict())}
        if phase == 1:
            best["score"] = -1.0  # the untrained head is not a candidate
        series: list[float] = []

        def on_epoch_end(epoch: int, log: TrainLog) -> None:
            score = self._val_aupr_error(net, val, ctx.device)
            series.append(score)
            log.extra[f"phase{phase}_val_aupr_error"] = list(series)
            if score > best["score"]:
                best["score"], best["state"] = score, copy.deepcopy(net.state_dict())
                log.extra[f"phase{phase}_best_epoch"] = [float(epoch)]

        log = fit_loop(net, train, val, recipe, ctx.device, self.seed + 1000 * phase, step,
                       label=f"confidnet phase {phase} {self.backbone} seed {self.seed}", progress=ctx.progress,
                       on_epoch_end=on_epoch_end, on_epoch=ctx.on_epoch)
        net.load_state_dict(best["state"])
        return log

    @staticmethod
    def _val_aupr_error(net: ConfidNetModel, val: ImageSet, device: torch.device) -> float:
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                out = [(net.backbone(x).argmax(1) != y, net.confidence(x)) for x, y in batches(val, 2048, None,
                                                                                              device)]
        finally:
            net.train(was_training)
        errors = torch.cat([o[0] for o in out]).cpu().numpy()
        conf = torch.cat([o[1] for o in out]).float().cpu().numpy()
        if errors.all() or not errors.any():
            return 0.0  # undefined without both classes: no epoch is preferred on this ground
        return average_precision(-conf, errors)


def merge(base: TrainLog, heads: list[TrainLog]) -> TrainLog:
    """Total cost = classifier + head phases: epochs concatenated (the classifier's first), so train seconds
    and epoch counts in the cost table are the whole method's. ``best_epoch`` counts from the first classifier
    epoch; per-phase series are in ``extra``."""
    out = replace(base, epoch_seconds=list(base.epoch_seconds), val_seconds=list(base.val_seconds),
                  losses=list(base.losses), val_accuracy=dict(base.val_accuracy), extra=dict(base.extra))
    offset = len(base.epoch_seconds)
    for phase, h in enumerate(heads, start=1):
        out.epoch_seconds += h.epoch_seconds
        out.val_seconds += h.val_seconds
        out.losses += h.losses
        out.extra.update(h.extra)
        out.peak_memory_mb = max(out.peak_memory_mb, h.peak_memory_mb)
        best = h.extra.get(f"phase{phase}_best_epoch", [])
        if best:
            out.best_epoch = offset + int(best[0])
        offset += len(h.epoch_seconds)
    out.extra["classifier_epochs"] = [float(len(base.epoch_seconds))]
    return out
