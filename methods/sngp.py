"""SNGP, spectral-normalised neural Gaussian process (Liu, Lin, Padhy, Tran, Bedrax-Weiss & Lakshminarayanan,
NeurIPS 2020; reference: edward2's ``RandomFeatureGaussianProcess`` / ``LaplaceRandomFeatureCovariance`` and
uncertainty-baselines' cifar/sngp.py flags).

Features h(x) of a spectral-normalised residual network (``sngp.net``, default the ``sn-resnet`` backbone of
methods/core/sn_nets.py) go through a random-feature GP output layer instead of a dense one:

    phi(x) = cos(W LayerNorm(h) / sqrt(s) + b),  W ~ N(0, 1) (M x F), b ~ U(0, 2 pi), both fixed;  logits = beta phi

M = 1024 random features, layer norm on the GP input and no sqrt(2/M) feature scale, as the reference CIFAR
setting. s (``kernel_scale``) defaults to F / 2, edward2's newer (JAX) default of he-normal random features, "the
input standardized by its dimensionality": with s = 1 (the TF layer's N(0, 1) on layer-normed features) sn-resnet's
64 layer-normed features sit ~11 length scales apart, and the contract's 32-step fit stayed at 18% accuracy.
beta is trained with the network by cross-entropy. The posterior precision of beta, shared by the classes as in
edward2 (Gaussian likelihood weights), is accumulated over each epoch from the minibatches' random features, reset
at the epoch's start, so the one kept is that of the final (or selected) epoch:

    P = ridge I + sum_n phi_n phi_n^T   (ridge 1),   var(x) = ridge phi(x)^T P^-1 phi(x)

Prediction: the mean-field approximation of the softmax of the Gaussian logits, logits / sqrt(1 + lambda var(x)),
lambda = pi/8 (the paper; uncertainty-baselines tuned 25 on CIFAR-10: ``sngp.mean_field``). Confidence = its
maximum probability. One variance per input, so the argmax is the MAP's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import fit_loop


@dataclass(frozen=True)
class SNGPConfig(Options):
    net: str = "sn-resnet"  # the spectral-normalised feature extractor; "" = the run's --backbone
    features: int = option(1024, ge=1)  # M, random Fourier features (reference: 1024)
    ridge: float = option(1.0, gt=0)  # ridge penalty of the precision (reference: 1)
    mean_field: float = option(math.pi / 8, ge=0)  # lambda of the mean-field adjustment (0 = the MAP softmax)
    normalize_input: bool = option(True)  # layer norm on the GP input (reference CIFAR setting)
    kernel_scale: float = option(0.0, gt=0, also=(0.0,))  # s: GP input / sqrt(s); 0 = F / 2 (he-normal features)
    epochs: int = option(0, ge=0)  # 0 = the run's train.epochs


def mean_field_logits(logits: torch.Tensor, variance: torch.Tensor, factor: float) -> torch.Tensor:
    """logits / sqrt(1 + factor * var), one variance per row."""
    return logits / torch.sqrt(1 + factor * variance.clamp_min(0))[:, None]


class SNGPModel(nn.Module):
    """Backbone features -> random-feature GP layer; ``forward`` gives MAP logits in training mode and mean-field
    logits in eval mode. The precision is a buffer (checkpoints and the loop's best-epoch copy carry it)."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: SNGPConfig):
        super().__init__()
        f, m = backbone.num_features, cfg.features
        self.backbone, self.cfg = backbone, cfg
        self.kernel_scale = cfg.kernel_scale or f / 2
        self.norm = nn.LayerNorm(f) if cfg.normalize_input else nn.Identity()
        self.register_buffer("rff_w", torch.randn(m, f))
        self.register_buffer("rff_b", torch.rand(m) * 2 * math.pi)
        self.beta = nn.Linear(m, num_classes, bias=False)
        nn.init.normal_(self.beta.weight, std=0.01)  # the reference's small Gaussian output initialiser
        self.register_buffer("precision", cfg.ridge * torch.eye(m, dtype=torch.float64))  # sums of ~1e5 terms
        self._cov: tuple[tuple[int, int], torch.Tensor] | None = None

    def random_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.backbone.forward_features(x)) / math.sqrt(self.kernel_scale)
        return torch.cos(h @ self.rff_w.T + self.rff_b)

    def reset_precision(self) -> None:
        self.precision.copy_(self.cfg.ridge * torch.eye(len(self.precision), dtype=torch.float64,
                                                        device=self.precision.device))

    @torch.no_grad()
    def update_precision(self, phi: torch.Tensor) -> None:
        self.precision.add_(phi.T.double() @ phi.double())

    def covariance(self) -> torch.Tensor:
        """ridge P^-1 (float64 Cholesky), cached until the precision changes (in place: its version moves)."""
        key = (self.precision.data_ptr(), self.precision._version)
        if self._cov is None or self._cov[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor: attacks backprop through it
                chol = torch.linalg.cholesky(self.precision)
                self._cov = (key, (self.cfg.ridge * torch.cholesky_inverse(chol)).float())
        return self._cov[1]

    def variance(self, phi: torch.Tensor) -> torch.Tensor:
        return ((phi @ self.covariance()) * phi).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.random_features(x)
        logits = self.beta(phi)
        if self.training:
            return logits
        return mean_field_logits(logits, self.variance(phi), self.cfg.mean_field)


@register("sngp", "SNGP (Liu et al. 2020): sn-resnet features + random-feature GP layer, Laplace precision over the "
          "last epoch, mean-field softmax; MCP")
class SNGP(ConfidenceMethod):
    Config = SNGPConfig
    training = Training.OWN
    grid_weight = 4.0  # scheduling hint, in baseline trainings: sn-resnet's (ddu's 3.8, smoke); 1.8-2.1 measured loaded
    needs_features = True

    @property
    def net(self) -> str:
        return self.config.net or self.backbone

    @classmethod
    def preflight(cls, config, net, n_train):
        """The kernel scale used (0 = F / 2 of the feature extractor) goes into the run manifest."""
        f = create_backbone(config.net, 10).num_features if config.net else net.num_features
        return {**dataclasses.asdict(config), "kernel_scale_used": config.kernel_scale or f / 2}

    def build_model(self) -> nn.Module:
        return SNGPModel(create_backbone(self.net, self.num_classes, shape=self.shape), self.num_classes,
                         self.config)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        recipe, model, stepper = self.new_training(ctx, train, self.config.epochs)
        current = [0]

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
            if epoch != current[0]:  # a new epoch: the precision is that of one pass over the data
                model.reset_precision()
                current[0] = epoch
            phi = model.random_features(x)
            loss = stepper(F.cross_entropy(model.beta(phi), y))
            model.update_precision(phi.detach())
            return {"loss": loss}

        # the precision is a buffer, rebuilt from identity every epoch: model + stepper are the whole state
        self.train_log = fit_loop(model, step, train, val, recipe, self.loop(ctx),
                                  resume=ctx.epoch_resume(self.cache_key(ctx), stepper))
        self.model = model
