"""DUQ, deterministic uncertainty quantification (van Amersfoort, Smith, Teh & Gal, ICML 2020; code
y0ast/deterministic-uncertainty-quantification, utils/cnn_duq.py and train_duq_fm.py).

The run's backbone gives features f(x) (``forward_features``); per class c a weight matrix W_c (E x F) maps them to
an embedding e_c = W_c f(x), compared with a class centroid m_c by an RBF kernel

    K_c(x) = exp(-||e_c - m_c||^2 / (2 E sigma^2))          (sigma = length scale 0.1, E = embedding size 256)

Loss: binary cross-entropy of the K_c against the one-hot label, plus lambda * two-sided gradient penalty on
||grad_x sum_c K_c||. The centroids are not learned by gradient: after each step, with the network in eval mode,
m_c = N_c-normalised exponential moving average (gamma 0.999) of the embeddings of class c (N_c its EMA count, both
started at 12 as the reference, m from N(0, 1) * 12). W_c ~ N(0, 0.05^2).

Defaults: the paper's FashionMNIST values (sigma 0.1, gamma 0.999, lambda 0.05, E 256). The penalty follows the
reference code, (||g|| - 1)^2 (``penalty=norm``); the paper's formula squares the norm, (||g||^2 - 1)^2
(``penalty=squared``). g is taken with respect to the *normalised* input (the reference normalises before the net;
our backbones normalise inside): g = grad_pixels * std. Optimiser: the run's recipe, so that every method gets the
same budget; the reference's network and recipe (SGD lr 0.05, momentum 0.9, wd 1e-4, 30 epochs, steps at 10 and 20)
are the ``duq-cnn`` backbone and the ``duq`` profile.
Classifier logits = log K_c, so probabilities = K / sum K (same argmax as the kernels) and attacks see the kernels;
confidence = max_c K_c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import eval_mode, fit_loop

INITIAL_COUNT = 12.0  # the reference's starting N_c (and scale of the random starting centroids)


@dataclass(frozen=True)
class DUQConfig(Options):
    length_scale: float = option(0.1, gt=0)  # sigma of the RBF kernel (paper, FashionMNIST)
    gamma: float = option(0.999, gt=0, lt=1)  # EMA rate of the centroids
    lam: float = option(0.05, ge=0)  # weight of the gradient penalty (0 = off)
    penalty: str = option("norm", one_of=("norm", "squared"))  # (||g|| - 1)^2 as the code, or (||g||^2 - 1)^2
    embedding: int = option(256, ge=1)  # E, size of each class's embedding
    epochs: int = option(0, ge=0)  # 0 = the run's train.epochs


class DUQModel(nn.Module):
    """Backbone features -> per-class embeddings -> log RBF kernels to the EMA centroids; ``forward`` gives log K."""

    def __init__(self, backbone: nn.Module, num_classes: int, embedding: int, length_scale: float):
        super().__init__()
        self.backbone = backbone
        self.length_scale = length_scale
        self.W = nn.Parameter(torch.randn(embedding, num_classes, backbone.num_features) * 0.05)
        self.register_buffer("N", torch.full((num_classes,), INITIAL_COUNT))
        self.register_buffer("m", torch.randn(embedding, num_classes) * INITIAL_COUNT)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, E, C): e_c = W_c f(x) for every class."""
        return torch.einsum("nf,ecf->nec", self.backbone.forward_features(x), self.W)

    def log_kernel(self, z: torch.Tensor) -> torch.Tensor:
        centroids = self.m / self.N  # (E, C)
        return -(z - centroids).pow(2).mean(1) / (2 * self.length_scale ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_kernel(self.embed(x))

    @torch.no_grad()
    def update_centroids(self, x: torch.Tensor, y1h: torch.Tensor, gamma: float) -> None:
        z = self.embed(x)
        self.N.mul_(gamma).add_((1 - gamma) * y1h.sum(0))
        self.m.mul_(gamma).add_((1 - gamma) * torch.einsum("nec,nc->ec", z, y1h))


def gradient_penalty(kernels: torch.Tensor, x: torch.Tensor, scale: float, squared: bool) -> torch.Tensor:
    """Mean two-sided penalty on the input gradient of sum_c K_c (``x`` must require grad), differentiable in the
    weights. ``scale`` converts pixel gradients to gradients w.r.t. the normalised input."""
    g = torch.autograd.grad(kernels.sum(), x, create_graph=True)[0].flatten(1) * scale
    if squared:
        return ((g.pow(2).sum(1) - 1) ** 2).mean()
    return ((g.norm(dim=1) - 1) ** 2).mean()  # norm's backward is 0 at g = 0, where sqrt's would be infinite


@register("duq", "DUQ: RBF kernels to EMA class centroids, BCE + gradient penalty (van Amersfoort et al. 2020); "
          "max kernel")
class DUQ(ConfidenceMethod):
    Config = DUQConfig
    training = Training.OWN
    grid_weight = 3.4  # scheduling hint, in baseline trainings: the penalty's double backprop (smoke run, docs)
    # the contract's tiny fit is 32 steps of Adam; DUQ's centroids are an EMA with gamma 0.999 (a ~1000-step time
    # constant) and every kernel starts near exp(-50), where the reference's BCE passes almost no gradient, so that
    # fit is still untrained (kernels ~4e-20, accuracy near chance). Seeded, hence strict: noticed if it changes.
    contract_xfail = {
        "outputs": "32-step tiny fit: DUQ's EMA centroids (gamma 0.999) have not moved yet; accuracy near chance",
        "direction": "32-step tiny fit: every kernel still ~4e-20, the confidence carries no signal yet",
    }

    def build_model(self) -> nn.Module:
        cfg = self.config
        return DUQModel(create_backbone(self.backbone, self.num_classes, shape=self.shape), self.num_classes,
                        cfg.embedding, cfg.length_scale)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg = self.config
        recipe, model, stepper = self.new_training(ctx, train, cfg.epochs)
        scale = float(getattr(model.backbone, "std", 1.0))  # d pixel = std * d normalised input

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
            y1h = F.one_hot(y, self.num_classes).float()
            x = x.requires_grad_(cfg.lam > 0)
            kernels = model(x).exp()
            # as the reference: its backward divides by max(K (1 - K), 1e-12), so while every kernel is ~exp(-50)
            # (the random start) almost no gradient flows until the EMA centroids have reached the embeddings
            bce = F.binary_cross_entropy(kernels, y1h)
            gp = gradient_penalty(kernels, x, scale, cfg.penalty == "squared") if cfg.lam > 0 else bce.new_zeros(())
            loss = stepper(bce + cfg.lam * gp)
            with eval_mode(model):  # centroids from the updated weights, dropout off, as the reference
                model.update_centroids(x.detach(), y1h, cfg.gamma)
            return {"loss": loss, "train_bce": bce.detach(), "train_penalty": gp.detach()}

        # the model (weights, centroids N and m as buffers) and the stepper are all of the state: resumable per epoch
        self.train_log = fit_loop(model, step, train, val, recipe, self.loop(ctx),
                                  resume=ctx.epoch_resume(self.cache_key(ctx), stepper))
        self.model = model

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.softmax(1), logits.max(1).values.exp()
