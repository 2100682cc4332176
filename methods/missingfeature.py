"""Classification based on missing features (Milosevic, EuroPython 2019 / Neural Network World 2019; code
nmilosev/negative-learning, ``mnist.py`` of Dec 2018).

Phase 1 is the run's cached baseline (the "standard net"). Phase 2, as the reference's hybrid nets do: freeze the
conv *weights* (the reference sets ``requires_grad = False`` on ``conv1.weight`` and ``conv2.weight`` only, so the
conv biases keep training; ``freeze_conv_bias=True`` freezes them too), re-initialise the FC layers (``hybrid``) or
keep them (``hybrid_nr``, "hybrid without FC reset"), and retrain with the last-conv features (after ReLU +
max-pool) inverted, x -> 1 - x, on a fresh SGD optimiser over the trainable parameters. ``hybrid_alt`` (also in
the reference) resets the FC layers and alternates epochs: odd phase-2 epochs see normal features, even ones
inverted. Inference always uses the inverted features (the state every reference variant ends in). The model
stays in train mode in phase 2, so the conv dropout of lenet stays on, as in the reference. Confidence = MCP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.methods.core.backbones import LeNet, SmallConvNet, create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import OPTIMIZERS, Stepper, TrainLog, TrainRecipe, fit_loop, frozen, supervised_step

VARIANTS = ("hybrid", "hybrid_nr", "hybrid_alt")

#: conv features -> penultimate features, per supported backbone (what follows ``forward_conv`` in its forward)
FC_FROM_CONV: dict[type, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    LeNet: lambda m, c: F.relu(m.fc1(c)),
    SmallConvNet: lambda m, c: F.relu(m.fc1(m.drop1(c))),
}
FC_LAYERS = ("fc1", "fc2")


@dataclass(frozen=True)
class MissingFeatureConfig(Options):
    """Phase 2 (the inverted-feature retraining); phase 1 is the run's ``train.*`` baseline recipe."""

    # hybrid (reset FC) | hybrid_nr (keep FC) | hybrid_alt (reset FC, alternate epochs)
    variant: str = option("hybrid", one_of=VARIANTS)
    epochs: int = option(10, ge=1)  # reference: 10 standard + 10 inverted
    optimizer: str = option("sgd", one_of=OPTIMIZERS)
    lr: float = option(0.1, gt=0)  # reference (Dec 2018): SGD lr 0.1 momentum 0.5, batch 64
    momentum: float = option(0.5, ge=0, lt=1)
    batch_size: int = option(64, ge=1)
    freeze_conv_bias: bool = False  # reference: only conv weights are frozen

    def recipe(self, val_every: int = 1) -> TrainRecipe:
        return TrainRecipe().but("missingfeature", optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                                 batch_size=self.batch_size, epochs=self.epochs, val_every=val_every)


class MissingFeatureNet(nn.Module):
    """A backbone whose last-conv features are inverted (``invert=True``) before its FC layers."""

    def __init__(self, backbone: nn.Module, name: str = "backbone"):
        super().__init__()
        fc = FC_FROM_CONV.get(type(backbone))
        if fc is None or not hasattr(backbone, "forward_conv"):
            raise UsageError(f"missingfeature needs last-conv features; backbone {name!r} has none "
                             "(use --backbone lenet or smallconvnet)")
        self.backbone, self._fc, self.invert = backbone, fc, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.backbone.forward_conv(x)
        return self.backbone.forward_head(self._fc(self.backbone, 1 - c if self.invert else c))

    def conv_weights(self) -> list[nn.Parameter]:
        return [m.weight for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]

    def conv_biases(self) -> list[nn.Parameter]:
        return [m.bias for m in self.backbone.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]

    def reset_fc(self) -> None:
        for name in FC_LAYERS:
            getattr(self.backbone, name).reset_parameters()


@register("missingfeature", "Missing features: frozen conv, FC retrained on inverted conv features (Milosevic 2019)")
class MissingFeature(ConfidenceMethod):
    training_version = 1  # 1: hybrid_alt selects its epoch on inverted features (before: normal-feature epochs won)
    mnist_only = "it inverts the last-conv features of lenet or smallconvnet, which are MNIST backbones"
    Config = MissingFeatureConfig
    training = Training.OWN
    grid_weight = 1.2  # scheduling hint, in baseline trainings: its inverted phase on top of a standard net

    def build_model(self) -> nn.Module:
        return MissingFeatureNet(create_backbone(self.backbone, self.num_classes, shape=self.shape), self.backbone)

    def _fit(self, train, val, ctx: FitContext) -> None:
        cfg = self.config
        self.build_model()  # fail fast, before training a baseline, on a backbone without conv features
        base, base_log, self.baseline_key = ctx.train_baseline(self.backbone, self.num_classes, self.seed,
                                                               train, val)
        net = MissingFeatureNet(base, self.backbone).to(ctx.device)
        self.seed_rng()
        if cfg.variant != "hybrid_nr":
            net.reset_fc()
        recipe = cfg.recipe(val_every=ctx.recipe.val_every)
        try:
            with frozen(*net.conv_weights(), *(net.conv_biases() if cfg.freeze_conv_bias else [])):
                stepper = Stepper([p for p in net.parameters() if p.requires_grad], recipe,
                                  math.ceil(len(train) / recipe.batch_size))
                plain = supervised_step(net, stepper)

                def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
                    net.invert = not (cfg.variant == "hybrid_alt" and epoch % 2 == 1)
                    try:
                        return plain(x, y, epoch)
                    finally:  # validation (model selection) sees the inverted features inference will use
                        net.invert = True

                log = fit_loop(net, step, train, val, recipe, self.loop(ctx),
                               resume=ctx.epoch_resume(self.cache_key(ctx), stepper))
        finally:
            net.invert = True
        # phase 2's epochs numbered after the baseline's; extra["phase"] says which is which
        self.model, self.train_log = net, TrainLog.concat([base_log, log])
