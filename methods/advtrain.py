"""Adversarial training (Madry et al. ICLR 2018; FGSM variants after Goodfellow et al. 2015 and Wong et al. 2020).

Each training batch is replaced by (or, with ``clean_weight`` > 0, mixed with) its adversarial version made
against the current model, in pixel space: l_inf ball of radius ``eps`` around the [0, 1] image, clipped to
[0, 1]. The attack is computed with the model in eval mode (dropout off, as the evaluation attacks see it); the
update is then taken in train mode. Loss = (1 - clean_weight) CE(adv) + clean_weight CE(clean).

Defaults and deviations: Madry et al.'s MNIST model is trained on 100% PGD examples at eps 0.3 with 40 steps of
0.01 and a random start. Forty steps cost 41 forward/backward passes per batch, too much for the 2-core CPU
budget, so the default is PGD with 10 steps of 2.5 eps / steps = 0.075 (the step rule of Madry et al.'s
robustness library), still with a random start; ``advtrain.steps=40 advtrain.step_size=0.01`` restores the
paper's attack. Warm-up (a deviation, common in MNIST PGD training): eps grows linearly per batch from 0 to eps
over the first ``eps_warmup`` epochs (0 = full eps from the first batch, as in Madry et al.); without it a small
net (lenet: 21,840 params) on a short budget stalls near chance at eps 0.3. Confidence = MCP. Model selection is
the shared rule (best *clean* validation accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.datasets.mnist import ImageSet
from bench.methods.core.attacks import ATTACKS, perturb
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import eval_mode, fit_loop, new_classifier


@dataclass(frozen=True)
class AdvTrainConfig(Options):
    attack: str = option("pgd", one_of=ATTACKS)  # pgd (Madry) | fgsm_rs (Wong et al. 2020) | fgsm (Goodfellow)
    eps: float = option(0.3, ge=0, le=1)  # l_inf radius in [0, 1] pixel units (Madry MNIST: 0.3)
    steps: int = option(10, ge=1)  # PGD iterations (Madry MNIST: 40; fewer here for the CPU budget)
    step_size: float = option(0.0, ge=0)  # 0 = automatic: 2.5 eps / steps (pgd), 1.25 eps (fgsm_rs), eps (fgsm)
    clean_weight: float = option(0.0, ge=0, lt=1)  # weight of the clean-batch loss (Madry: 0; Goodfellow: 0.5)
    eps_warmup: float = option(2.0, ge=0)  # epochs over which eps ramps up linearly from 0, per batch (0 = no ramp)

    def eps_at(self, epochs_done: float) -> float:
        """eps after ``epochs_done`` epochs of training (fractional: the ramp advances per batch)."""
        return self.eps if self.eps_warmup == 0 else self.eps * min(1.0, epochs_done / self.eps_warmup)


@register("advtrain", "Adversarial training on PGD / FGSM batches in pixel space (Madry et al. 2018); MCP")
class AdvTrain(ConfidenceMethod):
    Config = AdvTrainConfig
    training = Training.OWN
    grid_weight = 4.7  # scheduling hint, in baseline trainings: PGD-10 on every batch: ~11 passes per step

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg, recipe = self.config, ctx.recipe
        model, stepper = new_classifier(self.backbone, self.num_classes, self.seed, recipe, ctx.device, len(train),
                                        self.shape)
        n_batches = stepper.n_batches
        gen = self.generator(7919)  # random starts, apart from the batch order

        def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
            eps = cfg.eps_at((stepper.count + 1) / n_batches)
            with eval_mode(model):
                adv = perturb(model, x, y, cfg.attack, eps, cfg.steps, cfg.step_size or None, gen)
            loss = F.cross_entropy(model(adv), y)
            if cfg.clean_weight > 0:
                loss = (1 - cfg.clean_weight) * loss + cfg.clean_weight * F.cross_entropy(model(x), y)
            return stepper(loss)

        def eps_end(epoch: int) -> dict[str, float]:
            return {"eps_end": cfg.eps_at(stepper.count / n_batches)}

        self.train_log = fit_loop(model, step, train, val, recipe, self.loop(ctx), after_epoch=eps_end,
                                  resume=ctx.epoch_resume(self.cache_key(ctx), stepper, starts=gen))
        self.model = model
