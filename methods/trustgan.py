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

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import COMPILE_MODES, compiled_forward, eval_mode, fit_loop, frozen
from bench.methods.trustgan_nets import TARGET_LOSSES, Attacker, TrustGANNet, attacker_loss, target_loss

GAN_SCHEDULES = ("cyclic", "none")


@dataclass(frozen=True)
class TrustGANConfig(Options):
    key_optional = ("compile",)  # added after TrustGAN checkpoints were cached (Options.key_fields)

    backbone: str = ""  # target model; "" = the run's backbone (the paper profile sets trustgan-net)
    net_size: int = option(7, ge=2)  # trustgan-net size knob (7 = original, 86,046 params)
    # attacker size (5 = original, 4,931 params); 0 = 5 with trustgan-net, else 3
    gan_size: int = option(0, ge=2, also=(0,))
    epochs: int = option(0, ge=0)  # 0 = the run's train.epochs
    batch_size: int = option(0, ge=0)  # 0 = the run's train.batch_size (reference: 512)
    val_every: int = option(0, ge=0)  # 0 = the run's train.val_every (follow-up study: 25)
    lr: float = option(1e-3, gt=0)  # AdamW, both networks
    weight_decay: float = option(0.05, ge=0)
    grad_clip: float = option(1.0, ge=0)
    gan_lr_schedule: str = option("cyclic", one_of=GAN_SCHEDULES)  # CyclicLR 1e-3..5e-3, 50 steps up, per attacker step
    nb_step_net_alone: int = option(1, ge=0)  # first epochs: target alone
    prop_net_alone: float = option(0.0, ge=0, le=1)  # per-batch probability of skipping the attacker
    nb_step_gan: int = option(1, ge=0)
    nb_step_net_gan: int = option(1, ge=0)
    replay_prob: float = option(0.1, ge=0, le=1)  # probability of training the target on an earlier attacker snapshot
    target_loss: str = option("cross-entropy", one_of=TARGET_LOSSES)  # on real data
    attacker_sample_loss: str = option("", one_of=TARGET_LOSSES, also=("",))  # on attacker samples; "" = target_loss
    # bf16 autocast on CUDA (losses in float32); off: 3x slower than fp32 for the dilated convs on H100
    amp: bool = False
    # the three steps' forwards and losses through torch.compile ("reduce-overhead": CUDA graphs on a GPU, where an
    # epoch is bound by launch overhead); equal to eager within floating-point noise, dropout draws apart
    compile: str = option("none", one_of=COMPILE_MODES)


def _layout(cfg: TrustGANConfig) -> torch.memory_format:
    """The attacker's memory format: channels-last eagerly (see TrustGAN._fit), contiguous when compiled."""
    return torch.channels_last if cfg.compile == "none" else torch.contiguous_format


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@register("trustgan", "TrustGAN: target trained against a learned confidence attacker; confidence = MCP")
class TrustGAN(ConfidenceMethod):
    mnist_only = "its attacker and target nets are sized and checked for MNIST only"
    Config = TrustGANConfig
    training = Training.OWN
    grid_weight = 2.8  # scheduling hint, in baseline trainings: an attacker network trained beside the target

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        if self.config.backbone:
            self.backbone = self.config.backbone
        self.attacker: Attacker | None = None
        # auto attacker size: the original (5) against the original target; 3 (317 params) against other
        # backbones such as lenet, where a size-5 attacker would cost several times the classifier itself
        self.gan_size = self.config.gan_size or (5 if self.backbone == "trustgan-net" else 3)

    def build_model(self) -> nn.Module:
        if self.backbone == "trustgan-net":
            return TrustGANNet(self.num_classes, net_size=self.config.net_size)
        return create_backbone(self.backbone, self.num_classes, shape=self.shape)

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg, device = self.config, ctx.device
        recipe = ctx.recipe.but("trustgan", epochs=cfg.epochs or None, batch_size=cfg.batch_size or None,
                                val_every=cfg.val_every or None)
        self.seed_rng()
        net = self.build_model().to(device)
        # channels_last: oneDNN's backward of the attacker's few-channel convs is many times faster in it (eager only:
        # inductor's replication_pad2d backward fails on channels-last strides in torch 2.14)
        gan = Attacker(train.images.shape[1], self.gan_size).to(device, memory_format=_layout(cfg))
        self.model, self.attacker = net, gan
        run = _Trainer(net, gan, cfg, device, self.num_classes, self.generator(7919))  # CPU coins: no device sync
        self.train_log = fit_loop(net, run.step, train, val, recipe, self.loop(ctx), after_epoch=run.end_epoch,
                                  channels_last=cfg.compile == "none",
                                  resume=ctx.epoch_resume(self.cache_key(ctx), run))

    def extra_state(self) -> dict:
        return {"attacker": self.attacker.state_dict() if self.attacker is not None else None}

    def load_extra_state(self, state: dict) -> None:
        if state.get("attacker") is not None:
            self.attacker = Attacker(state["attacker"]["out.weight"].shape[0], self.gan_size)
            self.attacker.load_state_dict(state["attacker"])
            self.attacker.to(self.device)


class _Trainer:
    """The three optimiser steps of one batch (returning their losses), and the attacker snapshots per epoch."""

    def __init__(self, net: nn.Module, gan: Attacker, cfg: TrustGANConfig, device: torch.device, classes: int,
                 coins: torch.Generator):
        self.net, self.gan, self.cfg, self.device, self.classes = net, gan, cfg, device, classes
        # holds a replayed snapshot
        self.replayer = Attacker(gan.out.out_channels, len(gan.units) + 1).to(device,
                                                                             memory_format=_layout(cfg))
        self.net_opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gan_opt = torch.optim.AdamW(gan.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gan_sched = (torch.optim.lr_scheduler.CyclicLR(self.gan_opt, base_lr=cfg.lr, max_lr=5 * cfg.lr,
                                                            step_size_up=50, cycle_momentum=False)
                          if cfg.gan_lr_schedule == "cyclic" else None)
        self.coins = coins  # replay and "target alone" coins, apart from every other stream
        self.layout = _layout(cfg)
        self.forward = getattr(net, "forward_normalized", None)  # attacker samples in the net's own space
        self.amp = cfg.amp and device.type == "cuda"
        self.sample_loss = cfg.attacker_sample_loss or cfg.target_loss
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.best: dict[str, torch.Tensor] | None = None
        self.best_loss = torch.full((), math.inf, device=device)
        self.snapshots.append(_snapshot(gan))  # the attacker at the start of epoch 1
        # inductor's layout optimisation turns the replicate-padded convs channels-last, and its backward of
        # replication_pad2d then fails on those strides (torch 2.14): off for these functions only (and fit_loop
        # keeps the target in the default layout)
        opts = {"layout_optimization": False}
        self.attack_loss = compiled_forward(self._attack_loss, cfg.compile, opts)
        self.sample_loss_of = compiled_forward(self._sample_loss, cfg.compile, opts)
        self.real_loss = compiled_forward(self._real_loss, cfg.compile, opts)

    # the steps' forwards and losses, apart from their optimiser steps so that they can be compiled (cfg.compile);
    # a returned loss is cloned where it is kept past the next step (a CUDA-graph replay overwrites its outputs)
    def _attack_loss(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            g = self.gan(z)
        return attacker_loss(z, g, self._net_on_samples(g))

    def _sample_loss(self, g: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        return target_loss(self.sample_loss, self._net_on_samples(g), uniform)

    def _real_loss(self, x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            logits = self.net(x)
        return target_loss(self.cfg.target_loss, logits, onehot)

    def _net_on_samples(self, g: torch.Tensor) -> torch.Tensor:
        """Target logits for attacker samples g in [-1, 1]: straight into a net that has a normalised entry
        (trustgan-net, as in the reference), else mapped to pixels [0, 1] for the backbone's own normalisation."""
        with torch.autocast("cuda", torch.bfloat16, enabled=self.amp):
            return self.forward(g) if self.forward is not None else self.net((g + 1.0) * 0.5)

    def _clip_step(self, params, opt: torch.optim.Optimizer) -> None:
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    def attacker_step(self, shape: torch.Size) -> torch.Tensor:
        net, gan = self.net, self.gan
        gan.train()
        # target in eval mode; its weight gradients would be discarded: skip computing them
        with eval_mode(net), frozen(net):
            self.gan_opt.zero_grad(set_to_none=True)
            z = torch.rand(shape, device=self.device).contiguous(memory_format=self.layout)
            loss = self.attack_loss(z)
            loss.backward()
        # keep the lowest-loss attacker of the epoch (the state that produced this loss, before the update),
        # without a host sync: a masked copy on the device
        loss_d = loss.detach().clone()
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
        return loss_d

    def net_on_attacker_step(self, shape: torch.Size) -> torch.Tensor:
        z = torch.rand(shape, device=self.device).contiguous(memory_format=self.layout)
        replay = float(torch.rand(1, generator=self.coins)) < self.cfg.replay_prob
        with torch.no_grad():
            if replay:
                i = int(torch.randint(len(self.snapshots), (1,), generator=self.coins))
                self.replayer.load_state_dict(self.snapshots[i])
                self.replayer.eval()
                g = self.replayer(z)
            else:
                with eval_mode(self.gan):
                    g = self.gan(z)
        self.net.train()
        self.net_opt.zero_grad(set_to_none=True)
        uniform = torch.full((len(g), self.classes), 1.0 / self.classes, device=self.device)
        loss = self.sample_loss_of(g, uniform)
        loss.backward()
        self._clip_step(self.net.parameters(), self.net_opt)
        return loss.detach().clone()

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """The batch's steps; returns the target's loss on real data and, on attacker batches, the mean losses of
        the attacker steps and of the target steps on attacker samples (fit_loop averages each per epoch)."""
        cfg, out = self.cfg, {}
        if epoch > cfg.nb_step_net_alone and float(torch.rand(1, generator=self.coins)) >= cfg.prop_net_alone:
            shape = x.shape
            if cfg.nb_step_gan:
                out["attacker_loss"] = sum(self.attacker_step(shape) for _ in range(cfg.nb_step_gan)) / cfg.nb_step_gan
            if cfg.nb_step_net_gan:
                out["attacker_sample_loss"] = sum(self.net_on_attacker_step(shape)
                                                  for _ in range(cfg.nb_step_net_gan)) / cfg.nb_step_net_gan
        self.net.train()
        self.net_opt.zero_grad(set_to_none=True)
        loss = self.real_loss(x, F.one_hot(y, self.classes).float())
        loss.backward()
        self._clip_step(self.net.parameters(), self.net_opt)
        return {"loss": loss.detach().clone(), **out}

    def state_dict(self) -> dict[str, Any]:
        """What a training continued after an epoch needs (``EpochResume``) beside the target: the attacker, both
        optimisers, the attacker's schedule, the coins and the replay pool (the epoch's best is reset at its end,
        and the replayer is loaded from the pool before each use)."""
        return {"gan": self.gan.state_dict(), "net_opt": self.net_opt.state_dict(),
                "gan_opt": self.gan_opt.state_dict(),
                "gan_sched": self.gan_sched.state_dict() if self.gan_sched is not None else None,
                "coins": self.coins.get_state(), "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gan.load_state_dict(state["gan"])
        self.net_opt.load_state_dict(state["net_opt"])
        self.gan_opt.load_state_dict(state["gan_opt"])
        if self.gan_sched is not None:
            self.gan_sched.load_state_dict(state["gan_sched"])
        self.coins.set_state(state["coins"])
        self.snapshots = [{k: v.to(self.device) for k, v in snap.items()} for snap in state["snapshots"]]

    def end_epoch(self, epoch: int) -> None:
        if self.best is not None:  # this epoch's lowest-loss attacker joins the replay pool
            self.snapshots.append(self.best)
            self.best, self.best_loss = None, torch.full((), math.inf, device=self.device)
        self.snapshots.append(_snapshot(self.gan))  # the attacker at the start of the next epoch
