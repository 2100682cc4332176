"""Confident classifier (Lee, Lee, Lee & Shin, ICLR 2018, "Training confidence-calibrated classifiers for detecting
out-of-distribution samples"; code alinlab/Confident_classifier, ``run_joint_confidence.py``).

A classifier and a DCGAN are trained jointly so that the generator produces samples on the low-density boundary of
the data and the classifier is pushed towards the uniform distribution on them. Per batch, in the reference's order:

1. discriminator step: BCE(D(x), 1) + BCE(D(G(z).detach()), 0);
2. generator step on the *same* fake batch: BCE(D(G(z)), 1) + beta * KL(U || p(y | G(z)));
3. classifier step on a fresh fake batch: CE(f(x), y) + beta * KL(U || p(y | G(z'))).

KL(U || p) = sum_c (1/C) (log(1/C) - log p_c), averaged over the batch (the reference's ``F.kl_div(log_softmax,
uniform) * num_classes`` with the old element-wise mean). G and D: Adam(lr 2e-4, betas 0.5/0.999) as in the
reference. The classifier: by default the run's ``train.*`` optimiser (the same as the msp baseline it is compared
with); ``classifier_optimizer="reference"`` gives the reference's Adam(lr 2e-4, betas 0.9/0.999, no weight decay).
G's and D's learning rates (and the reference classifier's) are multiplied by ``lr_decay`` after the epoch at
``decay_at`` of the run (the reference: 0.1 after epoch 60 of 100); the recipe classifier follows the recipe's
scheduler. Epochs and batch size come from the run's recipe. G, D and the classifier stay in train mode throughout
(as in the reference, the classifier's dropout is on while it scores fakes). The generator ends in a sigmoid, so
fakes are [0, 1] images like real ones. Confidence = MCP. The DCGAN is the reference's 32x32 one cut to 28x28
(1 -> 7 -> 14 -> 28; D mirrors it), width 16 by default (reference 64; see docs/oodgan.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import Stepper, TrainRecipe, fit_loop, training_layout


@dataclass(frozen=True)
class OODGANConfig(Options):
    beta: float = option(1.0, ge=0)  # weight of the KL-to-uniform term (reference: 1; 0.1 for its CIFAR-10 run)
    lr: float = option(2e-4, gt=0)  # Adam learning rate of classifier, G and D (reference)
    nz: int = option(100, gt=0)  # latent size (reference)
    ngf: int = option(16, gt=0)  # generator width (reference: 64, for 32x32 RGB; 16 keeps CPU runs affordable)
    ndf: int = option(16, gt=0)  # discriminator width (reference: 64)
    lr_decay: float = option(0.1, gt=0, le=1)  # reference ``droprate``
    decay_at: float = option(0.6, ge=0, le=1)  # fraction of the epochs after which the LRs decay (ref.: 60 of 100)
    # "recipe" = the run's train.* optimiser; "reference" = Adam(lr) (see docs)
    classifier_optimizer: str = option("recipe", one_of=("recipe", "reference"))


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(U || softmax(logits)) = -log C - mean_c log p_c."""
    return -math.log(logits.shape[1]) - F.log_softmax(logits, 1).mean(1).mean()


def _dcgan_init(m: nn.Module) -> None:
    """DCGAN initialisation, as in the reference: conv weights N(0, 0.02), batch-norm weights N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_generator(nz: int, ngf: int, channels: int = 1) -> nn.Sequential:
    """z (N, nz, 1, 1) -> images (N, channels, 28, 28) in [0, 1]."""
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 7x7
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 14
        nn.ConvTranspose2d(ngf * 2, channels, 4, 2, 1, bias=False), nn.Sigmoid(),  # 28x28
    )
    g.apply(_dcgan_init)
    return g


def build_discriminator(ndf: int, channels: int = 1) -> nn.Sequential:
    """images (N, channels, 28, 28) -> probability of being real (N,)."""
    d = nn.Sequential(
        nn.Conv2d(channels, ndf * 2, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # 14x14
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),  # 7
        nn.Conv2d(ndf * 4, 1, 7, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0),
    )
    d.apply(_dcgan_init)
    return d


@register("oodgan", "Confident classifier: joint DCGAN + KL-to-uniform on boundary samples (Lee et al. ICLR 2018)")
class OODGAN(ConfidenceMethod):
    mnist_only = "its DCGAN generator draws 28x28 grey images (1 -> 7 -> 14 -> 28)"
    Config = OODGANConfig
    training = Training.OWN
    grid_weight = 5.0  # scheduling hint, in baseline trainings: a GAN trained beside the classifier

    def _fit(self, train, val, ctx: FitContext) -> None:
        cfg, recipe, dev = self.config, ctx.recipe, ctx.device
        self.seed_rng()
        model = self.build_model().to(dev)
        gen, disc = build_generator(cfg.nz, cfg.ngf).to(dev), build_discriminator(cfg.ndf).to(dev)
        reference = cfg.classifier_optimizer == "reference"
        # the classifier's updates: the reference's plain Adam, or the run's recipe (optimiser, clipping, scheduler
        # stepped after each epoch's last batch)
        clf_recipe = TrainRecipe().but("oodgan", optimizer="adam", lr=cfg.lr) if reference else recipe
        stepper = Stepper(model.parameters(), clf_recipe, math.ceil(len(train) / recipe.batch_size))
        opt = stepper.opt
        opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        decay_epoch = round(cfg.decay_at * recipe.epochs)

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
            gen.train(), disc.train()
            n = len(x)
            ones, zeros = torch.ones(n, device=dev), torch.zeros(n, device=dev)
            # (1) discriminator: real vs the fakes of this batch
            opt_d.zero_grad(set_to_none=True)
            fake = gen(torch.randn(n, cfg.nz, 1, 1, device=dev))
            loss_d = F.binary_cross_entropy(disc(x), ones) + F.binary_cross_entropy(disc(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            # (2) generator: fool D and stay where the classifier is uncertain (same fakes as step 1)
            opt_g.zero_grad(set_to_none=True)
            loss_g = F.binary_cross_entropy(disc(fake), ones) + cfg.beta * kl_to_uniform(model(fake))
            loss_g.backward()
            opt_g.step()
            # (3) classifier: cross-entropy on real data + KL to uniform on fresh fakes
            with torch.no_grad():
                fake = gen(torch.randn(n, cfg.nz, 1, 1, device=dev))
            kl = kl_to_uniform(model(fake))
            loss = stepper(F.cross_entropy(model(x), y) + cfg.beta * kl)
            return {"loss": loss, "loss_d": loss_d, "loss_g": loss_g, "kl_fake": kl}  # per-epoch means in the log

        def decay(epoch: int) -> None:
            if epoch == decay_epoch:
                for o in ((opt, opt_g, opt_d) if reference else (opt_g, opt_d)):
                    for group in o.param_groups:
                        group["lr"] *= cfg.lr_decay

        with training_layout(gen, dev), training_layout(disc, dev):  # channels-last GAN convolutions on a CPU
            # the GAN's two networks and optimisers are saved beside the classifier's (decay's lr lives in them)
            resume = ctx.epoch_resume(self.cache_key(ctx), stepper, gen=gen, disc=disc, opt_g=opt_g, opt_d=opt_d)
            self.train_log = fit_loop(model, step, train, val, recipe, self.loop(ctx), after_epoch=decay,
                                      resume=resume)
        self.model, self.generator = model, gen.eval()

    def extra_state(self) -> dict[str, Any]:
        gen = getattr(self, "generator", None)
        return {"generator": gen.state_dict()} if gen is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            gen = build_generator(self.config.nz, self.config.ngf)
            gen.load_state_dict(state["generator"])
            self.generator = gen.to(self.device).eval()
