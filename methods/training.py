"""The shared training loop: seeded index-slice batches over in-memory tensors, per-epoch timing, validation
every ``val_every`` epochs with best-accuracy model selection, NaN detection, optimiser/scheduler from a recipe.

Model-selection rule (the same for every method): the weights kept are those of the epoch with the best
validation accuracy among the checked epochs (every ``val_every`` epochs and the last one); ties keep the earlier.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from bench import faults
from bench.datasets.mnist import ImageSet, to_float
from bench.errors import TrainingError, UsageError
from bench.utils import Timer, peak_memory, reset_peak_memory

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULERS = ("none", "step", "cosine")


@dataclass(frozen=True)
class TrainRecipe:
    """How a classifier is trained. Part of every checkpoint's cache key."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 3
    val_every: int = 1
    scheduler: str = "none"
    step_size: int = 1
    gamma: float = 0.7
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"train.optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"train.scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        for name in ("batch_size", "epochs", "val_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"train.lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.step_size < 1 or not self.gamma > 0:
            raise UsageError(f"train.step_size must be >= 1 and train.gamma > 0, got {self.step_size} and "
                             f"{self.gamma}")


@dataclass
class TrainLog:
    """What a fit measured. Saved with the checkpoint, so a cache hit still reports the real training cost."""

    epoch_seconds: list[float] = field(default_factory=list)  # training steps only
    val_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_accuracy: dict[int, float] = field(default_factory=dict)  # epoch (1-based) -> %
    best_epoch: int = 0
    peak_memory_metric: str = "peak_rss_mb"
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    extra: dict[str, list[float]] = field(default_factory=dict)  # method-specific per-epoch series

    @property
    def train_seconds(self) -> float:
        return sum(self.epoch_seconds) + sum(self.val_seconds)


def build_optimizer(params, recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adadelta(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, recipe: TrainRecipe):
    if recipe.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    return None


def batches(data: ImageSet, batch_size: int, generator: torch.Generator | None, device: torch.device
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float [0, 1] image batches and labels on ``device``: a (seeded) permutation cut into index slices."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size].to(data.images.device)
        yield to_float(data.images[idx]).to(device, non_blocking=True), data.labels[idx].to(device, non_blocking=True)


def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, data: ImageSet,
                device: torch.device, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` over every batch of ``data`` in order, with ``model`` in eval mode (its mode restored) under
    inference_mode: (concatenated outputs, labels), on ``device``."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = [(fn(x), y) for x, y in batches(data, batch_size, None, device)]
    finally:
        model.train(was_training)
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def accuracy_on(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 2048) -> float:
    if len(data) == 0:
        return 0.0
    logits, labels = map_batches(model, model, data, device, batch_size)
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def check_finite(loss: float, where: str) -> None:
    if not math.isfinite(loss):
        raise TrainingError(f"{where}: loss became {loss}; lower the learning rate (--set train.lr=...) or "
                            "enable gradient clipping (--set train.grad_clip=1.0)")


def fit_loop(
    model: nn.Module,
    train: ImageSet,
    val: ImageSet,
    recipe: TrainRecipe,
    device: torch.device,
    seed: int,
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    label: str = "train",
    progress=None,
    on_epoch_end: Callable[[int, TrainLog], None] | None = None,
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
) -> TrainLog:
    """Run ``recipe.epochs`` epochs of ``step(x, y, epoch) -> loss`` (the step owns its optimiser updates) and
    keep the best validated weights of ``model``. ``progress`` is an optional ``bench.progress.Bars``;
    ``on_epoch_end(epoch, log)`` lets a method add its own series to ``log.extra``; ``on_epoch(label, epoch,
    scalars)`` then receives the epoch's loss, time, validation accuracy and ``extra`` values (TensorBoard)."""
    log = TrainLog(device=str(device))
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state = -1.0, None
    n_batches = math.ceil(len(train) / recipe.batch_size)
    task = progress.add(label, total=recipe.epochs * n_batches) if progress else None
    reset_peak_memory(device)
    try:
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            total = torch.zeros((), device=device)
            with Timer(device) as t:
                for x, y in batches(train, recipe.batch_size, gen, device):
                    faults.hit("batch")  # tests: a kill during training (one env lookup when unset)
                    total += step(x, y, epoch).detach()
                    if task is not None:
                        progress.advance(task)
            log.epoch_seconds.append(t.seconds)
            mean_loss = float(total) / n_batches
            check_finite(mean_loss, f"{label}, epoch {epoch}")
            log.losses.append(mean_loss)
            if epoch % recipe.val_every == 0 or epoch == recipe.epochs:
                with Timer(device) as tv:
                    acc = accuracy_on(model, val, device)
                log.val_seconds.append(tv.seconds)
                log.val_accuracy[epoch] = acc
                if acc > best_acc:
                    best_acc, log.best_epoch = acc, epoch
                    best_state = copy.deepcopy(model.state_dict())
            if on_epoch_end is not None:
                on_epoch_end(epoch, log)
            if on_epoch is not None:
                mem_name, mem = peak_memory(device)
                scalars = {"loss": mean_loss, "epoch_seconds": t.seconds, mem_name: mem,
                           **{k: v[-1] for k, v in log.extra.items() if v}}
                if epoch in log.val_accuracy:
                    scalars["val_accuracy"] = log.val_accuracy[epoch]
                on_epoch(label, epoch, scalars)
    finally:
        if task is not None:
            progress.remove(task)
    if best_state is not None:
        model.load_state_dict(best_state)
    log.peak_memory_metric, log.peak_memory_mb = peak_memory(device)
    return log


class Stepper:
    """One optimiser update per call: zero grads, backward, optional grad-norm clipping (``recipe.grad_clip``),
    step; the recipe's scheduler is stepped once per epoch, after the epoch's last batch."""

    def __init__(self, params, recipe: TrainRecipe, n_batches: int):
        self.params = list(params)
        self.recipe = recipe
        self.n_batches = max(n_batches, 1)
        self.opt = build_optimizer(self.params, recipe)
        self.sched = build_scheduler(self.opt, recipe)
        self.count = 0  # updates so far

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        self.opt.step()
        self.count += 1
        if self.sched is not None and self.count % self.n_batches == 0:
            self.sched.step()
        return loss


def new_classifier(backbone: str, num_classes: int, seed: int, recipe: TrainRecipe, device: torch.device,
                   n_train: int) -> tuple[nn.Module, Stepper]:
    """A backbone initialised from ``seed`` and its ``Stepper`` for the recipe (batches per epoch from n_train)."""
    from bench.methods.backbones import create_backbone

    torch.manual_seed(seed)
    model = create_backbone(backbone, num_classes).to(device)
    return model, Stepper(model.parameters(), recipe, math.ceil(n_train / recipe.batch_size))


def supervised_step(model: nn.Module, stepper: Stepper) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """A plain cross-entropy step."""
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return stepper(loss_fn(model(x), y))

    return step
