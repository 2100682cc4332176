"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student of the run's backbone trained on a teacher's
temperature-softened outputs mixed with the hard labels.

Loss = lam * CE(s(x), y) + (1 - lam) * T^2 * KL(softmax(t(x) / T) || softmax(s(x) / T)), where s are the
student's logits and t(x) = log p_teacher(x), the log of the teacher's predicted probabilities (for a plain
classifier this equals its logits up to a per-sample constant, so softmax(t / T) is Hinton's softened output; for
an ensemble it is the log of the mean softmax, for MC-dropout the log of the MC mean). The T^2 factor is Hinton's:
it keeps the soft term's gradients on the same scale as the hard term's when T changes. KL differs from the
soft cross-entropy by the teacher's entropy, a constant: same gradients, but the loss is 0 at a perfect match.

Defaults: T = 4 and lam = 0.1 (weight on the hard labels). Hinton et al. used T = 20 for their 1200-unit MNIST
nets and report that for much smaller students (30 units) temperatures of 2.5 to 4 work significantly better;
lenet's head has 50 units, hence 4. They put "a considerably lower weight" on the hard term, hence 0.1.

The teacher is any registered method (``teacher``, default ``ensemble`` of 5 seeds), fitted with the same
recipe, split and seed through ``ctx.fit_method``, i.e. loaded from the checkpoint cache when the run (or an
earlier run) already trained it. Its outputs on the training images are computed once before the student's
first epoch (timed in ``train_log.extra['teacher_seconds']``); the teacher's own training cost is its own row.
The student is predicted at T = 1; confidence = MCP. Teacher and student validation accuracy and parameter
counts are kept in ``extra_state`` (and ``train_log.extra``) for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import accuracy_on, fit_loop, new_classifier


@dataclass(frozen=True)
class DistillConfig(Options):
    teacher: str = "ensemble"  # any registered method, fitted with its default config
    temperature: float = option(4.0, gt=0)  # T
    lam: float = option(0.1, ge=0, le=1)  # weight of the hard-label cross-entropy; 1 - lam on the soft term

    def check(self) -> None:
        if self.teacher == "distill":
            raise UsageError("distill.teacher cannot be distill itself; choose e.g. ensemble or msp")


def distillation_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, y: torch.Tensor, lam: float,
                      temperature: float) -> torch.Tensor:
    """lam * CE(student, y) + (1 - lam) * T^2 * KL(teacher_T || student_T), batch mean."""
    t = temperature
    soft = F.kl_div((student_logits / t).log_softmax(1), (teacher_logp / t).log_softmax(1), reduction="batchmean",
                    log_target=True)
    return lam * F.cross_entropy(student_logits, y) + (1 - lam) * t * t * soft


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@register("distill", "Distillation: student on T-softened teacher outputs + hard labels (Hinton et al. 2015); MCP")
class Distill(ConfidenceMethod):
    Config = DistillConfig
    training = Training.OWN
    grid_weight = 3.0  # scheduling hint, in baseline trainings: its teacher ensemble trains four more baselines

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.report: dict[str, float | str] = {}

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        cfg, recipe = self.config, ctx.recipe
        teacher = ctx.fit_method(cfg.teacher, self.backbone, self.num_classes, self.seed, train, val)
        t0 = time.perf_counter()
        teacher_logp = teacher.predict(train.images).probs.clamp_min(1e-12).log().to(ctx.device)
        teacher_seconds = time.perf_counter() - t0
        teacher_val = float((teacher.predict(val.images).probs.argmax(1) == val.labels.cpu()).float().mean() * 100)
        # the student's batches carry sample indices as "labels", to look up the teacher's outputs and true labels
        indexed = ImageSet(train.images, torch.arange(len(train), device=train.labels.device))
        labels = train.labels
        model, stepper = new_classifier(self.backbone, self.num_classes, self.seed, recipe, ctx.device, len(train),
                                        self.shape)

        def step(x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
            return stepper(distillation_loss(model(x), teacher_logp[idx], labels[idx], cfg.lam, cfg.temperature))

        log = fit_loop(model, step, indexed, val, recipe, self.loop(ctx),
                       resume=ctx.epoch_resume(self.cache_key(ctx), stepper))
        self.model = model
        self.report = {"teacher": cfg.teacher, "teacher_val_accuracy": teacher_val,
                       "student_val_accuracy": accuracy_on(model, val, ctx.device),
                       "teacher_params": float(n_params(teacher.classifier)), "student_params": float(n_params(model)),
                       "teacher_seconds": teacher_seconds}
        log.extra.update({k: [v] for k, v in self.report.items() if isinstance(v, float)})
        self.train_log = log

    def extra_state(self) -> dict[str, Any]:
        return {"report": dict(self.report)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.report = dict(state.get("report", {}))
