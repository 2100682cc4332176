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
from dataclasses import dataclass

import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import (
    Selection,
    Stepper,
    TrainLog,
    TrainRecipe,
    fit_loop,
    frozen,
    map_batches,
)
from bench.metrics import average_precision


@dataclass(frozen=True)
class ConfidNetConfig(Options):
    head_epochs: int = option(20, ge=1)  # the head's own epochs (reference template: 500); see the module docstring
    head_lr: float = option(1e-4, gt=0)  # Adam, as the reference
    hidden: int = option(400, ge=1)
    error_weight: float = option(1.0, gt=0)  # reference ``loss.weighting``: MSE weight of misclassified samples
    backbone_dropout: bool = True  # phase 1 keeps the classifier's dropout on (reference: model.train())
    finetune_epochs: int = option(0, ge=0)  # phase 2 (encoder copy fine-tuned, dropout off); 0 = off
    finetune_lr: float = option(1e-5, gt=0)  # our default for phase 2 (Adam); not a value taken from the reference


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
    training = Training.FROZEN_BASELINE
    grid_weight = 1.6  # scheduling hint, in baseline trainings: its head's own epochs on the baseline
    needs_features = True
    training_version = 1  # 1: the head reads the post-dropout features (before: the clean ones)

    def build_model(self) -> nn.Module:
        backbone = create_backbone(self.backbone, self.num_classes, shape=self.shape)
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
        self.seed_rng()
        net = ConfidNetModel(backbone, cfg.hidden).to(ctx.device)
        net.backbone_dropout = cfg.backbone_dropout
        self.model = net
        with frozen(net.backbone):  # the classifier only gives features and TCP; attacks get its gradients back
            logs = [base_log, self._phase(net, train, val, ctx, 1, cfg.head_epochs, cfg.head_lr, net.head)]
            if cfg.finetune_epochs > 0:
                net.encoder = copy.deepcopy(net.backbone)
                net.encoder.requires_grad_(True)
                logs.append(self._phase(net, train, val, ctx, 2, cfg.finetune_epochs, cfg.finetune_lr,
                                        net.encoder, net.head))
        net.phase = 1
        self.train_log = TrainLog.concat(logs)  # costs count the classifier's epochs too

    def _phase(self, net: ConfidNetModel, train: ImageSet, val: ImageSet, ctx: FitContext, phase: int,
               epochs: int, lr: float, *trained: nn.Module) -> TrainLog:
        """Train the ``trained`` modules for ``epochs`` with the TCP regression; keep the best validation
        AUPR-Error (phase 2: the phase-1 result competes, as the weights the phase starts from)."""
        net.phase = phase
        recipe = TrainRecipe().but("confidnet", optimizer="adam", lr=lr, batch_size=ctx.recipe.batch_size,
                                   epochs=epochs)
        params = [p for m in trained for p in m.parameters()]
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

        select = Selection("val_aupr_error", val_aupr_error, every=1, include_start=phase == 2)
        return fit_loop(net, step, train, val, recipe, self.loop(ctx, f"phase {phase}", self.seed + 1000 * phase),
                        select=select, resume=ctx.epoch_resume(f"{self.cache_key(ctx)}.phase{phase}", stepper))


def val_aupr_error(net: ConfidNetModel, val: ImageSet, device: torch.device) -> float:
    """AUPR-Error (%) of the confidence on ``val``, errors positive: ConfidNet's model-selection score."""
    # one pass (eval mode, inference mode): columns = predicted class, confidence
    out, labels = map_batches(lambda x: torch.stack([net.backbone(x).argmax(1).float(), net.confidence(x)], 1),
                              net, val, device)
    errors = (out[:, 0].long() != labels).cpu().numpy()
    conf = out[:, 1].float().cpu().numpy()
    if errors.all() or not errors.any():
        return 0.0  # undefined without both classes: no epoch is preferred on this ground
    return average_precision(-conf, errors)
