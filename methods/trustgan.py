"""TrustGAN (du Mas des Bourboux 2022, arXiv 2211.13991; code ThalesGroup/trustGAN, follow-up InagoesIT/
trustGAN-refactored): the target classifier is trained against a "confidence attacker" that learns to produce
inputs the target is confident about; the target learns to answer them with the uniform distribution.
Confidence = MCP of the target.

Per batch (after the first ``nb_step_net_alone`` epochs, and unless a coin with probability ``prop_net_alone``
says "target alone"): (1) ``nb_step_gan`` attacker steps, target in eval mode; (2) ``nb_step_net_gan`` target
steps on attacker samples towards 1/C, using with probability ``replay_prob`` a random *earlier* attacker
snapshot (kept in memory: the attacker at the start of every epoch and the lowest-loss attacker of every epoch);
(3) one target step on the real batch. AdamW for both, gradient-norm clipping, attacker LR cyclic.

Budget rule: ``epochs``, ``batch_size`` and ``val_every`` of 0 take the run's recipe (``ctx.recipe``); any other
value overrides it for this method only (the paper profile sets the reference's batch 512 and validation every
25 epochs). The optimiser is always TrustGAN's (AdamW ``lr``, ``weight_decay``, ``grad_clip``); the recipe's
optimiser and scheduler are not used. Model selection: the shared rule (best validation accuracy among the
checked epochs). See docs/trustgan.md for the differences from the reference code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bench.datasets.mnist import ImageSet
from bench.methods.backbones import create_backbone
from bench.methods.base import ConfidenceMethod, FitContext, register
from bench.methods.training import TrainLog, fit_loop
from bench.methods.trustgan_nets import (
    TARGET_LOSSES,
    Attacker,
    TrustGANNet,
    attacker_loss,
    target_loss,
)
from torch import nn

from bench.errors import UsageError
from bench.utils import peak_memory, reset_peak_memory

GAN_SCHEDULES = ("cyclic", "none")


@dataclass(frozen=True)
class TrustGANConfig:
    backbone: str = ""  # target model; "" = the run's backbone (the paper profile sets trustgan-net)
    net_size: int = 7  # trustgan-net size knob (7 = original, 86,046 params)
    gan_size: int = 0  # attacker size knob (5 = original, 4,931 params); 0 = 5 with trustgan-net, else 3
    epochs: int = 0  # 0 = the run's train.epochs
    batch_size: int = 0  # 0 = the run's train.batch_size (reference: 512)
    val_every: int = 0  # 0 = the run's train.val_every (follow-up study: 25)
    lr: float = 1e-3  # AdamW, both networks
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    gan_lr_schedule: str = "cyclic"  # CyclicLR 1e-3..5e-3, 50 steps up, stepped per attacker step; "none" = 1e-3
    nb_step_net_alone: int = 1  # first epochs: target alone
    prop_net_alone: float = 0.0  # per-batch probability of skipping the attacker
    nb_step_gan: int = 1
    nb_step_net_gan: int = 1
    replay_prob: float = 0.1  # probability of training the target on an earlier attacker snapshot
    target_loss: str = "cross-entropy"  # on real data
    attacker_sample_loss: str = ""  # on attacker samples; "" = same as target_loss
    amp: bool = False  # bf16 autocast on CUDA (losses in float32); off: 3x slower than fp32 for the dilated convs on H100

    def __post_init__(self) -> None:
        for name in ("target_loss", "attacker_sample_loss"):
            v = getattr(self, name)
            if v not in TARGET_LOSSES and not (name == "attacker_sample_loss" and v == ""):
                raise UsageError(f"trustgan.{name} {v!r} is not one of {', '.join(TARGET_LOSSES)}")
        if self.gan_lr_schedule not in GAN_SCHEDULES:
            raise UsageError(f"trustgan.gan_lr_schedule {self.gan_lr_schedule!r} is not one of cyclic, none")
        for name in ("epochs", "batch_size", "val_every", "nb_step_net_alone", "nb_step_gan", "nb_step_net_gan"):
            if getattr(self, name) < 0:
                raise UsageError(f"trustgan.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("prop_net_alone", "replay_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"trustgan.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise UsageError("trustgan.lr must be > 0 and trustgan.weight_decay, trustgan.grad_clip >= 0")
        if self.net_size < 2 or (self.gan_size != 0 and self.gan_size < 2):
            raise UsageError(f"trustgan.net_size must be >= 2 and trustgan.gan_size 0 (auto) or >= 2, got "
                             f"{self.net_size} and {self.gan_size}")


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@register("trustgan", "TrustGAN: target trained against a learned confidence attacker; confidence = MCP")
class TrustGAN(ConfidenceMethod):
    mnist_only = "its attacker and target nets are sized and checked for MNIST only"
    Config = TrustGANConfig

    def __init__(self, config=None, *, backbone: str = "lenet", num_classes: int = 10, seed: int = 0):
        super().__init__(config, backbone=backbone, num_classes=num_classes, seed=seed)
        if self.config.backbone:
            self.backbone = self.config.backbone
        self.attacker: Attacker | None = None
        # auto attacker size: the original (5) against the original target; 3 (317 params) against other
        # backbones such as lenet, where a size-5 attacker would cost several times the classifier itself
        self.gan_size = self.config.gan_size or (5 if self.backbone == "trustgan-net" else 3)

    def build_model(self) -> nn.Module:
        if self.backbone == "trustgan-net":
            return TrustGANNet(self.num_classes, net_size=self.config.net_size)
        return create_backbone(self.backbone, self.num_classes)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg, device = self.config, ctx.device
        recipe = dataclasses.replace(ctx.recipe, epochs=cfg.epochs or ctx.recipe.epochs,
                                     batch_size=cfg.batch_size or ctx.recipe.batch_size,
                                     val_every=cfg.val_every or ctx.recipe.val_every)
        torch.manual_seed(self.seed)
        net = self.build_model().to(device)
        # channels_last: oneDNN's backward of the attacker's few-channel convs is many times faster in it
        gan = Attacker(train.images.shape[1], self.gan_size).to(device, memory_format=torch.channels_last)
        self.model, self.attacker = net, gan
        run = _Trainer(net, gan, cfg, device, self.num_classes, self.seed)
        log = fit_loop(net, train, val, recipe, device, self.seed, run.step, label=f"trustgan seed {self.seed}",
                       progress=ctx.progress, on_epoch_end=run.end_epoch, on_epoch=ctx.on_epoch)
        per_epoch = log.extra.get(log.peak_memory_metric, [])
        if per_epoch:  # fit_loop's figure covers the last epoch only (we reset the CUDA peak every epoch)
            log.peak_memory_mb = max(per_epoch)
        self.train_log = log

    def extra_state(self) -> dict:
        return {"attacker": self.attacker.state_dict() if self.attacker is not None else None}

    def load_extra_state(self, state: dict) -> None:
        if state.get("attacker") is not None:
            self.attacker = Attacker(state["attacker"]["out.weight"].shape[0], self.gan_size)
            self.attacker.load_state_dict(state["attacker"])
            self.attacker.to(self.device)


class _Trainer:
    """The three optimiser steps of one batch, and the per-epoch bookkeeping (losses, snapshots, memory)."""

    def __init__(self, net: nn.Module, gan: Attacker, cfg: TrustGANConfig, device: torch.device, classes: int,
                 seed: int):
        self.net, self.gan, self.cfg, self.device, self.classes = net, gan, cfg, device, classes
        self.replayer = Attacker(gan.out.out_channels, len(gan.units) + 1).to(device,
                                                                             memory_format=torch.channels_last)  # holds a replayed snapshot
        self.net_opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gan_opt = torch.optim.AdamW(gan.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gan_sched = (torch.optim.lr_scheduler.CyclicLR(self.gan_opt, base_lr=cfg.lr, max_lr=5 * cfg.lr,
                                                            step_size_up=50, cycle_momentum=False)
                          if cfg.gan_lr_schedule == "cyclic" else None)
        self.coins = torch.Generator().manual_seed(seed + 7919)  # CPU coins: no device sync per batch
        self.forward = getattr(net, "forward_normalized", None)  # attacker samples in the net's own space
        self.amp = cfg.amp and device.type == "cuda"
        self.sample_loss = cfg.attacker_sample_loss or cfg.target_loss
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.best: dict[str, torch.Tensor] | None = None
        self.best_loss = torch.full((), math.inf, device=device)
        self._reset_sums()
        self.snapshots.append(_snapshot(gan))  # the attacker at the start of epoch 1

    def _reset_sums(self) -> None:
        self.sums = {k: torch.zeros((), device=self.device) for k in ("attacker_loss", "attacker_sample_loss")}
        self.attacker_batches = 0

    def _net_on_samples(self, g: torch.Tensor) -> torch.Tensor:
        """Target logits for attacker samples g in [-1, 1]: straight into a net that has a normalised entry
        (trustgan-net, as in the reference), else mapped to pixels [0, 1] for the backbone's own normalisation."""
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            return self.forward(g) if self.forward is not None else self.net((g + 1.0) * 0.5)

    def _clip_step(self, params, opt: torch.optim.Optimizer) -> None:
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    def attacker_step(self, shape: torch.Size) -> None:
        net, gan = self.net, self.gan
        gan.train()
        net.eval()
        for p in net.parameters():  # the target's weight gradients would be discarded: skip computing them
            p.requires_grad_(False)
        try:
            self.gan_opt.zero_grad(set_to_none=True)
            z = torch.rand(shape, device=self.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
                g = gan(z)
            logits = self._net_on_samples(g)
            loss = attacker_loss(z, g, logits)
            loss.backward()
        finally:
            for p in net.parameters():
                p.requires_grad_(True)
            net.train()
        # keep the lowest-loss attacker of the epoch (the state that produced this loss, before the update),
        # without a host sync: a masked copy on the device
        loss_d = loss.detach()
        better = loss_d < self.best_loss
        if self.best is None:
            self.best = _snapshot(gan)
        else:
            for k, v in gan.state_dict().items():
                self.best[k].copy_(torch.where(better, v, self.best[k]))
        self.best_loss = torch.minimum(self.best_loss, loss_d)
        self._clip_step(gan.parameters(), self.gan_opt)
        if self.gan_sched is not None:
            self.gan_sched.step()
        self.sums["attacker_loss"] += loss_d

    def net_on_attacker_step(self, shape: torch.Size) -> None:
        z = torch.rand(shape, device=self.device).contiguous(memory_format=torch.channels_last)
        replay = float(torch.rand(1, generator=self.coins)) < self.cfg.replay_prob
        with torch.no_grad():
            if replay:
                i = int(torch.randint(len(self.snapshots), (1,), generator=self.coins))
                self.replayer.load_state_dict(self.snapshots[i])
                self.replayer.eval()
                g = self.replayer(z)
            else:
                self.gan.eval()
                g = self.gan(z)
                self.gan.train()
        self.net.train()
        self.net_opt.zero_grad(set_to_none=True)
        uniform = torch.full((len(g), self.classes), 1.0 / self.classes, device=self.device)
        loss = target_loss(self.sample_loss, self._net_on_samples(g), uniform)
        loss.backward()
        self._clip_step(self.net.parameters(), self.net_opt)
        self.sums["attacker_sample_loss"] += loss.detach()

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        cfg = self.cfg
        if epoch > cfg.nb_step_net_alone and float(torch.rand(1, generator=self.coins)) >= cfg.prop_net_alone:
            shape = x.shape
            for _ in range(cfg.nb_step_gan):
                self.attacker_step(shape)
            for _ in range(cfg.nb_step_net_gan):
                self.net_on_attacker_step(shape)
            self.attacker_batches += 1
        self.net.train()
        self.net_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            logits = self.net(x)
        loss = target_loss(cfg.target_loss, logits, F.one_hot(y, self.classes).float())
        loss.backward()
        self._clip_step(self.net.parameters(), self.net_opt)
        return loss

    def end_epoch(self, epoch: int, log: TrainLog) -> None:
        n_gan, n_net = self.attacker_batches * self.cfg.nb_step_gan, self.attacker_batches * self.cfg.nb_step_net_gan
        means = {"target_loss": log.losses[-1],
                 "attacker_loss": float(self.sums["attacker_loss"]) / n_gan if n_gan else math.nan,
                 "attacker_sample_loss": float(self.sums["attacker_sample_loss"]) / n_net if n_net else math.nan}
        mem_name, mem = peak_memory(self.device)
        means[mem_name] = mem
        for k, v in means.items():
            log.extra.setdefault(k, []).append(v)
        reset_peak_memory(self.device)  # CUDA: per-epoch peaks; CPU peak RSS is process-wide and never resets
        if self.best is not None:  # this epoch's lowest-loss attacker joins the replay pool
            self.snapshots.append(self.best)
            self.best, self.best_loss = None, torch.full((), math.inf, device=self.device)
        self.snapshots.append(_snapshot(self.gan))  # the attacker at the start of the next epoch
        self._reset_sums()
