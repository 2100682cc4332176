"""SWAG, stochastic weight averaging Gaussian (Maddox, Izmailov, Garipov, Vetrov & Wilson, NeurIPS 2019; code
wjmaddox/swa_gaussian, swag/posteriors/swag.py).

Starts from the run's cached baseline (its pretraining, shared with msp), then an SWA phase of ``swa_epochs``
epochs of SGD at the constant rate ``swa_lr`` (momentum and weight decay: the run's recipe). During that phase
``snapshots`` copies of the weights theta_i are collected at evenly spaced steps (the paper collects once per epoch:
with swa_epochs >= snapshots it is the same) into running moments and a deviation matrix:

    theta_SWA = mean theta_i,  sq = mean theta_i^2,  Sigma_diag = max(sq - theta_SWA^2, 1e-30),
    D = the last K columns theta_i - (running mean after collecting i)    (as the reference)

Posterior N(theta_SWA, 1/2 (Sigma_diag + D D^T / (K - 1))); a sample is
theta_SWA + sqrt(scale) (Sigma_diag^1/2 z1 + D z2 / sqrt(K - 1)), scale 1/2 = the paper's formula (the reference's
``--scale 0.5``), K - 1 taken from the rank K asked for, as the reference (``max_num_models - 1``). ``samples`` S
weight vectors are drawn once at the end of the fit from the method's seed (inference is then deterministic and the
checkpoint holds them); a network with batch norm gets each sample's running statistics recomputed on
``bn_images`` training images (the reference: the whole training set). Prediction = the mean of the S softmaxes,
confidence its maximum; ``logits`` are log of that mean. White-box attacks see SWAG as they see MC-dropout:
``classifier`` is the SWA mean network theta_SWA (batch-norm statistics recomputed for it, as the reference's
``bn_update``), and the EOT sets (``eot=K``) attack the whole posterior, each of the K gradient passes through one of
the S samples drawn at random (``eot_classifier``). Attacking the 30-sample mean directly in every attack set cost 30
passes per step, a third of a seed's worker time in the full MNIST leaderboard (docs/bayesian-and-single-pass.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.datasets.mnist import ImageSet
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import Selection, Stepper, TrainLog, batches, fit_loop

VAR_CLAMP = 1e-30  # the reference's floor of the diagonal variance


@dataclass(frozen=True)
class SWAGConfig(Options):
    rank: int = option(20, ge=2)  # K, columns of the deviation matrix (paper: 20)
    samples: int = option(30, ge=1)  # S weight samples at inference (paper: 30)
    snapshots: int = option(0, ge=2, also=(0,))  # weight copies collected in the SWA phase; 0 = rank
    swa_epochs: int = option(0, ge=1, also=(0,))  # epochs of the SWA phase; 0 = half the run's epochs (at least 1)
    swa_lr: float = option(0.01, gt=0)  # constant SGD rate of the SWA phase
    scale: float = option(0.5, gt=0)  # sample scale (0.5 = the paper's 1/2 covariance)
    bn_images: int = option(4096, ge=1)  # training images to recompute each sample's batch-norm statistics


class SWAGMoments:
    """Running first and second moments and the last ``rank`` deviations of flat weight vectors (float64)."""

    def __init__(self, dim: int, rank: int):
        self.n, self.rank = 0, rank
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.sq_mean = torch.zeros(dim, dtype=torch.float64)
        self.dev: list[torch.Tensor] = []

    def collect(self, theta: torch.Tensor) -> None:
        theta = theta.detach().double().cpu()
        self.mean = (self.mean * self.n + theta) / (self.n + 1)
        self.sq_mean = (self.sq_mean * self.n + theta ** 2) / (self.n + 1)
        self.n += 1
        self.dev = (self.dev + [theta - self.mean])[-self.rank :]  # deviation from the mean that includes theta

    def state_dict(self) -> dict[str, Any]:
        """What an interrupted SWA phase continues from (``EpochResume``)."""
        return {"n": self.n, "mean": self.mean, "sq_mean": self.sq_mean, "dev": list(self.dev)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n, self.mean, self.sq_mean, self.dev = int(state["n"]), state["mean"], state["sq_mean"], list(state["dev"])

    def variance(self) -> torch.Tensor:
        return (self.sq_mean - self.mean ** 2).clamp_min(VAR_CLAMP)

    def deviations(self) -> torch.Tensor:
        """D, (dim, k) with k = min(collected, rank)."""
        return torch.stack(self.dev, 1)

    def sample(self, count: int, scale: float, gen: torch.Generator) -> torch.Tensor:
        """(count, dim) draws theta_SWA + sqrt(scale) (var^1/2 z1 + D z2 / sqrt(rank - 1))."""
        d = self.deviations()
        z1 = torch.randn(count, len(self.mean), generator=gen, dtype=torch.float64)
        z2 = torch.randn(count, d.shape[1], generator=gen, dtype=torch.float64)
        noise = self.variance().sqrt() * z1 + z2 @ d.T / math.sqrt(self.rank - 1)
        return self.mean + math.sqrt(scale) * noise


class SampledNetworks(nn.Module):
    """S weight samples of one network: images -> log of the mean of the S softmaxes. The samples (flat parameter
    vectors) and each sample's batch-norm statistics are buffers, so a checkpoint holds them."""

    def __init__(self, base: nn.Module, samples: int):
        super().__init__()
        self.base = base
        self.names = [n for n, _ in base.named_parameters()]
        dim = sum(p.numel() for p in base.parameters())
        self.register_buffer("thetas", torch.zeros(samples, dim))
        self.stat_names = [n for n, m in base.named_buffers() if m.dtype.is_floating_point
                           and n.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
        for i, n in enumerate(self.stat_names):
            self.register_buffer(f"stat{i}", torch.zeros(samples, *base.get_buffer(n).shape))

    def weights(self, s: int) -> dict[str, torch.Tensor]:
        """Sample s as the base network's parameters and batch-norm statistics, by name."""
        out, start = {}, 0
        for n, p in self.base.named_parameters():
            w = self.thetas[s, start : start + p.numel()].view_as(p)
            # the base network's layout (channels-last while bench.methods.core.training.inference_layout holds)
            out[n] = w if w.stride() == p.stride() else torch.empty_like(p).copy_(w)
            start += p.numel()
        out.update((n, getattr(self, f"stat{i}")[s]) for i, n in enumerate(self.stat_names))
        return out

    def sample_forward(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Logits of weight sample s."""
        return functional_call(self.base, self.weights(s), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([self.sample_forward(s, x).log_softmax(1) for s in range(len(self.thetas))])
        return torch.logsumexp(logp, 0) - math.log(len(self.thetas))


class RandomSample(nn.Module):
    """One of the S weight samples, drawn anew (global RNG) at every forward pass: SWAG's randomness for EOT attacks."""

    def __init__(self, sampled: SampledNetworks):
        super().__init__()
        self.sampled = sampled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = int(torch.randint(len(self.sampled.thetas), ()))
        return self.sampled.sample_forward(s, x)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@torch.no_grad()
def recompute_bn(model: nn.Module, data: ImageSet, images: int, device: torch.device) -> None:
    """Batch-norm running statistics as the cumulative average over ``images`` training images (momentum None)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x, _ in batches(data.subset(slice(0, images)), 512, None, device):
            model(x)
    finally:
        for m, mom in saved:
            m.momentum = mom
        for m, mode in modes:
            m.training = mode


@register("swag", "SWAG (Maddox et al. 2019): SWA-phase moments + rank-K deviations from the baseline, S weight "
          "samples; MCP of the mean softmax")
class SWAG(ConfidenceMethod):
    Config = SWAGConfig
    training = Training.OWN  # trains a copy of the baseline further (its SWA phase)
    # 1: the mean network's batch-norm statistics are recomputed (it became the attacks' classifier)
    training_version = 1
    grid_weight = 1.5  # scheduling hint: the baseline (often cached), half its epochs again, 30-pass inference

    @property
    def forward_passes(self) -> int:
        return self.config.samples

    @property
    def classifier(self) -> nn.Module:
        """The SWA mean network (white-box attacks; see the module docstring)."""
        return self._fitted_model().base

    def eot_classifier(self) -> nn.Module:
        return RandomSample(self._fitted_model())

    @classmethod
    def preflight(cls, config, net, n_train):
        """The snapshot count used (0 = rank) goes into the run manifest; swa_epochs 0 is half the run's epochs."""
        return {**dataclasses.asdict(config), "snapshots_used": config.snapshots or config.rank}

    def build_model(self) -> nn.Module:
        return SampledNetworks(create_backbone(self.backbone, self.num_classes, shape=self.shape),
                               self.config.samples)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg = self.config
        base, base_log, self.baseline_key = ctx.train_baseline(self.backbone, self.num_classes, self.seed, train,
                                                               val)
        epochs = cfg.swa_epochs or max(1, ctx.recipe.epochs // 2)
        recipe = ctx.recipe.but(self.name, optimizer="sgd", lr=cfg.swa_lr, scheduler="none", epochs=epochs)
        self.seed_rng()  # the SWA phase's dropout masks follow from the method's seed
        net = copy.deepcopy(base).to(ctx.device)  # the cached baseline stays as it was
        n_batches = math.ceil(len(train) / recipe.batch_size)
        stepper = Stepper(net.parameters(), recipe, n_batches)
        total, count = epochs * n_batches, cfg.snapshots or cfg.rank
        # evenly spaced collection steps (1-based), the last at the phase's end
        at = {round(total * (k + 1) / count) for k in range(count)}
        moments = SWAGMoments(sum(p.numel() for p in net.parameters()), cfg.rank)

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
            loss = stepper(F.cross_entropy(net(x), y))
            if stepper.count in at:  # the phase's update count, saved with the stepper when a run is interrupted
                moments.collect(flat_params(net))
            return {"loss": loss}

        # no selection: the weights are the collected ones; the loop's own check runs once, at the last epoch
        log = fit_loop(net, step, train, val, recipe, self.loop(ctx, "swa"), select=Selection(every=epochs + 1),
                       resume=ctx.epoch_resume(self.cache_key(ctx), stepper, moments=moments))
        model = self.build_model().to(ctx.device)
        model.base.load_state_dict(net.state_dict())
        thetas = moments.sample(cfg.samples, cfg.scale, self.generator(1)).float()
        model.thetas.copy_(thetas)
        for s in range(cfg.samples):
            if model.stat_names:
                torch.nn.utils.vector_to_parameters(thetas[s].to(ctx.device), model.base.parameters())
                recompute_bn(model.base, train, cfg.bn_images, ctx.device)
                for i, n in enumerate(model.stat_names):
                    getattr(model, f"stat{i}")[s].copy_(model.base.get_buffer(n))
        torch.nn.utils.vector_to_parameters(moments.mean.float().to(ctx.device), model.base.parameters())
        if model.stat_names:  # the mean network's own statistics (its role: the attacks' classifier)
            recompute_bn(model.base, train, cfg.bn_images, ctx.device)
        log.extra["snapshots"] = [float(moments.n)] + [math.nan] * (len(log.epoch_seconds) - 1)
        self.train_log = TrainLog.concat([base_log, log])  # pretraining + SWA phase: SWAG's whole cost
        self.model = model
