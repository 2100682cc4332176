"""The training template: seeded index-slice batches over in-memory tensors, per-epoch timing, loss averaging and
peak memory, NaN detection, pluggable model selection, optimiser/scheduler from a recipe, and the random stream a
fit runs in.

``fit_loop(model, step, train, val, recipe, loop)`` runs ``recipe.epochs`` epochs of ``step(x, y, epoch)``; the
step owns its optimiser updates and returns its loss, or a dict of tensors with a ``"loss"`` entry (each entry is
averaged per epoch over the batches that returned it: ``"loss"`` becomes ``TrainLog.losses``, the others per-epoch
series in ``TrainLog.extra``, NaN for an epoch without any). ``after_epoch(epoch)`` may return more per-epoch
scalars. Model selection (``Selection``): the weights kept are those of the checked epoch with the best score
(default: validation accuracy, checked every ``val_every`` epochs and at the last one); ties keep the earlier.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from bench import faults
from bench.datasets.mnist import ImageSet, to_float
from bench.errors import TrainingError, UsageError
from bench.methods.core.options import Options, check_values, option
from bench.utils import Timer, peak_memory, reset_peak_memory

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULERS = ("none", "step", "cosine", "cosine_iter")
AUGMENTS = ("none", "flip_crop4")
#: torch.compile modes of the training forward (``train.compile``): "reduce-overhead" also captures CUDA graphs on a
#: GPU (one capture per batch shape, replayed every step); on the CPU it compiles without graphs
COMPILE_MODES = ("none", "default", "reduce-overhead")


@dataclass(frozen=True)
class TrainRecipe(Options):
    """How a classifier is trained. Part of every checkpoint's cache key."""

    section = "train"
    key_optional = ("nesterov", "augment", "compile")  # added after baselines were cached (Options.key_fields)

    optimizer: str = option("adam", one_of=OPTIMIZERS)
    lr: float = option(1e-3, gt=0)
    momentum: float = option(0.9, ge=0, lt=1)
    weight_decay: float = option(0.0, ge=0)
    batch_size: int = option(128, ge=1)
    epochs: int = option(3, ge=1)
    val_every: int = option(1, ge=1)
    scheduler: str = option("none", one_of=SCHEDULERS)
    step_size: int = option(1, ge=1)
    gamma: float = option(0.7, gt=0)
    grad_clip: float = option(0.0, ge=0)
    nesterov: bool = option(False)  # SGD only
    augment: str = option("none", one_of=AUGMENTS)  # flip_crop4: random horizontal flip, random crop padded by 4
    # the baseline's training forward through torch.compile (docs/performance.md); results equal to eager within
    # floating-point noise, not bit for bit, so it is part of the cache key when set
    compile: str = option("none", one_of=COMPILE_MODES)

    def check(self) -> None:
        super().check()
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UsageError("train.nesterov needs train.optimizer=sgd and train.momentum > 0")

    def but(self, section: str, **changes: object) -> "TrainRecipe":
        """The one way a method derives its own recipe: this recipe with ``changes`` (a change of None keeps this
        recipe's value), checked against the declared ranges with errors naming ``section.key`` (the method's own
        option, e.g. ``missingfeature.lr``). Start from ``TrainRecipe()`` for a recipe independent of the run's."""
        changes = {k: v for k, v in changes.items() if v is not None}
        check_values(TrainRecipe, section, changes)
        return dataclasses.replace(self, **changes)


@dataclass
class TrainLog:
    """What a fit measured. Saved with the checkpoint, so a cache hit still reports the real training cost."""

    epoch_seconds: list[float] = field(default_factory=list)  # training steps only
    val_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_accuracy: dict[int, float] = field(default_factory=dict)  # epoch (1-based) -> %
    best_epoch: int = 0  # the epoch whose weights were kept; 0 = the weights the loop started from
    peak_memory_metric: str = "peak_rss_mb"
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    extra: dict[str, list[float]] = field(default_factory=dict)  # per-epoch series (and single facts, e.g. a T)

    @property
    def train_seconds(self) -> float:
        return sum(self.epoch_seconds) + sum(self.val_seconds)

    @classmethod
    def concat(cls, logs: Sequence["TrainLog"]) -> "TrainLog":
        """One log for work done one after the other (a method's phases; an ensemble's members, trained in turn),
        so that the cost table counts all of it. Epochs are numbered on from the first log's first epoch: the
        per-epoch lists are concatenated, ``val_accuracy`` keys shifted. ``best_epoch`` is that of the last log
        that kept one of its own epochs (best_epoch > 0), shifted; a later log with best_epoch 0 kept the weights
        it started from, so the earlier choice stands. ``extra`` holds per-epoch series: each key's values in
        order, NaN for the epochs of a log without that key, plus ``phase`` (1-based index of the log each epoch
        came from). Peak memory: the largest; metric and device: the last log's."""
        out = TrainLog(device=logs[-1].device, peak_memory_metric=logs[-1].peak_memory_metric)
        keys = list(dict.fromkeys(k for log in logs for k in log.extra if k != "phase"))
        out.extra = {k: [] for k in keys}
        out.extra["phase"] = []
        for i, log in enumerate(logs, start=1):
            offset, n = len(out.epoch_seconds), len(log.epoch_seconds)
            out.epoch_seconds += log.epoch_seconds
            out.val_seconds += log.val_seconds
            out.losses += log.losses
            out.val_accuracy.update({offset + e: v for e, v in log.val_accuracy.items()})
            if log.best_epoch > 0:
                out.best_epoch = offset + log.best_epoch
            out.peak_memory_mb = max(out.peak_memory_mb, log.peak_memory_mb)
            for k in keys:
                out.extra[k] += log.extra.get(k, [math.nan] * n)
            out.extra["phase"] += [float(i)] * n
        return out


# --- the random stream ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """torch's global random stream forked: restored on exit (CPU, and ``device``'s CUDA stream), so what runs
    inside never shifts the caller's draws; seeded with ``seed`` on entry when given. ``ConfidenceMethod.fit``
    runs every fit inside one; stochastic inference runs seeded inside one."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            seed_stream(seed)
        yield


def seed_stream(seed: int) -> None:
    """Seed torch's global stream (weight initialisation, dropout masks, ``torch.rand``), the one place training
    does it; call it inside ``forked_rng`` (a fit is), right before building the networks a method trains."""
    torch.manual_seed(seed)


def generator(seed: int) -> torch.Generator:
    """A CPU generator of its own (batch order, coins, random starts): draws from it never shift any other stream."""
    return torch.Generator().manual_seed(seed)


# --- mode and gradient switches -------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """``modules`` in eval mode inside; on exit every submodule gets back its own train/eval flag (set directly,
    not through ``train()``, which a module may override), also when the body raises."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


@contextlib.contextmanager
def frozen(*params_or_modules: Union[nn.Module, nn.Parameter]) -> Iterator[None]:
    """The given parameters (or all parameters of the given modules) with ``requires_grad`` off inside, each
    parameter's own flag restored on exit: frozen weights get no gradients computed, not just no updates."""
    params = [p for x in params_or_modules for p in (x.parameters() if isinstance(x, nn.Module) else [x])]
    saved = [(p, p.requires_grad) for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


# --- optimisers and batches -----------------------------------------------------------------------------------
def build_optimizer(params, recipe: TrainRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                               nesterov=recipe.nesterov)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adadelta(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


COSINE_ITER_MIN_LR = 1e-6  # OpenOOD's cosine_annealing ends at 1e-6, not 0


def build_scheduler(opt: torch.optim.Optimizer, recipe: TrainRecipe, n_batches: int = 1):
    """The recipe's scheduler; ``cosine_iter`` is stepped after every update (``Stepper``), the others per epoch."""
    if recipe.scheduler == "cosine_iter":
        total, floor = recipe.epochs * n_batches, COSINE_ITER_MIN_LR / recipe.lr
        # OpenOOD's BaseTrainer: LambdaLR, factor floor + (1 - floor) (1 + cos(pi t / T)) / 2 after t updates
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t / total)))
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


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """OpenOOD's training transform on a float batch (N, C, H, W): each image flipped left-right with probability
    1/2, then cropped back to H x W from a 4-pixel zero border (torchvision's RandomHorizontalFlip, then
    RandomCrop(padding=4)); coins and offsets drawn from ``gen`` (the loop's batch-order generator), so a seed
    gives the same run."""
    if kind == "none":
        return x
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))  # zeros: black pixels, as torchvision pads a PIL image
    rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (N, H): the window's rows in the padded image
    cols = (dx[:, None] + torch.arange(w)).to(x.device)
    idx = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the channel dim last: (N, H, W, C)
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, data: ImageSet,
                device: torch.device, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` over every batch of ``data`` in order, with ``model`` in eval mode (its modes restored) under
    inference_mode: (concatenated outputs, labels), on ``device``."""
    with eval_mode(model), torch.inference_mode():
        outs = [(fn(x), y) for x, y in batches(data, batch_size, None, device)]
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


# --- the loop -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Which weights a loop keeps: those of the checked epoch with the best ``score(model, val, device)`` (higher
    is better; ties keep the earlier). Epochs are checked every ``every`` epochs (None: the recipe's
    ``val_every``) and at the last one. With ``include_start`` the weights the loop starts from compete too (scored
    before the first epoch; kept as "epoch 0"). Scores go to ``TrainLog.val_accuracy`` for ``val_accuracy``, else
    to the per-epoch series ``extra[name]`` (NaN for unchecked epochs)."""

    name: str = "val_accuracy"
    score: Callable[[nn.Module, ImageSet, torch.device], float] = accuracy_on
    every: int | None = None
    include_start: bool = False


BEST_ACCURACY = Selection()


@dataclass(frozen=True)
class Loop:
    """Where a loop runs and what it reports to: the device, the seed of its batch order, its label (progress bar,
    error messages, live logs), the progress bars and the per-epoch logger ``on_epoch(label, epoch, scalars)``.
    Methods get theirs from ``ConfidenceMethod.loop(ctx)``; the shared baseline from ``FitContext.loop``."""

    device: torch.device
    seed: int
    label: str = "train"
    progress: object = None
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None


@dataclass(frozen=True)
class EpochResume:
    """Opt-in continuation of an interrupted training: after every finished epoch ``fit_loop`` saves the model, the
    ``parts`` (name -> object with ``state_dict`` / ``load_state_dict``: the ``Stepper``, any other network or state
    the step updates; a ``torch.Generator`` is saved as its state), the batch-order generator, torch's random
    stream, the kept weights and the log under the checkpoint ``key`` in ``cache`` (``<cache>/.partial/<key>.pt``);
    a later loop of the same key starts after that epoch and ends with the weights an uninterrupted loop gives. Only
    a training whose whole state is the model plus ``parts`` may opt in (an ``after_epoch`` or step that keeps state
    elsewhere would be silently reset; tests/test_epoch_resume.py has a check per opted-in method)."""

    cache: Any  # bench.cache.CheckpointCache
    key: str
    parts: Mapping[str, Any] = field(default_factory=dict)


Step = Callable[[torch.Tensor, torch.Tensor, int], Union[torch.Tensor, Mapping[str, torch.Tensor]]]


def fit_loop(model: nn.Module, step: Step, train: ImageSet, val: ImageSet, recipe: TrainRecipe, loop: Loop, *,
             select: Selection = BEST_ACCURACY,
             after_epoch: Callable[[int], Mapping[str, float] | None] | None = None,
             channels_last: bool = True, resume: EpochResume | None = None) -> TrainLog:
    """Train ``model`` for ``recipe.epochs`` epochs of ``step`` over ``train`` in ``recipe.batch_size`` batches
    and keep the weights ``select`` picks (see the module docstring). Per epoch the log gets the mean loss, the
    step's other means, the training and validation seconds, ``after_epoch``'s scalars and the epoch's peak
    memory (CUDA: the peak is reset after each epoch; ``peak_memory_mb`` is the largest). ``channels_last``: the
    CPU's channels-last layout while training (``training_layout``), never for a compiled step (the recipe's
    ``compile``, or False from a method that compiles its own): inductor's replication_pad2d backward fails on
    channels-last strides in torch 2.14, and a compiled lenet step was no faster in that layout. ``resume``: save
    the state after every epoch and continue from a saved one (``EpochResume``)."""
    device = loop.device
    log = TrainLog(device=str(device))
    order = generator(loop.seed)
    every = select.every or recipe.val_every
    best_score, best_state = -math.inf, None
    n_batches = math.ceil(len(train) / recipe.batch_size)
    task = loop.progress.add(loop.label, total=recipe.epochs * n_batches) if loop.progress else None
    reset_peak_memory(device)
    layout = training_layout(model, device) if channels_last and recipe.compile == "none" else contextlib.nullcontext()
    with layout:  # channels-last convolutions while training on a CPU
        saved = _load_epoch_state(resume, model, order, device, loop.label) if resume is not None else None
        if saved is not None:
            done, best_score, best_state, log = saved
            if task is not None:
                loop.progress.advance(task, done * n_batches)
            if hasattr(loop.progress, "note"):
                loop.progress.note(f"train {loop.label}: continuing from epoch {done + 1} of {recipe.epochs} "
                                   "(saved when the run was interrupted)")
        else:
            done = 0
            if select.include_start:
                best_score, best_state = select.score(model, val, device), copy.deepcopy(model.state_dict())
        try:
            for epoch in range(done + 1, recipe.epochs + 1):
                model.train()
                sums: dict[str, torch.Tensor] = {}
                counts: dict[str, int] = {}
                with Timer(device) as t:
                    for x, y in batches(train, recipe.batch_size, order, device):
                        faults.hit("batch")  # tests: a kill during training (one env lookup when unset)
                        x = augment_batch(x, recipe.augment, order)  # no draws when "none": old runs unchanged
                        out = step(x, y, epoch)
                        for k, v in (out.items() if isinstance(out, Mapping) else (("loss", out),)):
                            if k not in sums:  # kept on the device: no host sync per batch
                                sums[k], counts[k] = torch.zeros((), device=device), 0
                            sums[k] += v.detach()
                            counts[k] += 1
                        if task is not None:
                            loop.progress.advance(task)
                log.epoch_seconds.append(t.seconds)
                if "loss" not in sums:
                    raise TypeError(f"{loop.label}: the step must return its loss (a tensor, or a dict with 'loss')")
                mean_loss = float(sums.pop("loss")) / n_batches
                check_finite(mean_loss, f"{loop.label}, epoch {epoch}")
                log.losses.append(mean_loss)
                scalars = {k: float(v) / counts[k] for k, v in sums.items()}
                if epoch % every == 0 or epoch == recipe.epochs:
                    with Timer(device) as tv:
                        score = select.score(model, val, device)
                    log.val_seconds.append(tv.seconds)
                    if select.name == "val_accuracy":
                        log.val_accuracy[epoch] = score
                    scalars[select.name] = score
                    if score > best_score:
                        best_score, log.best_epoch = score, epoch
                        best_state = copy.deepcopy(model.state_dict())
                scalars.update((after_epoch(epoch) if after_epoch is not None else None) or {})
                mem_name, mem = peak_memory(device)
                scalars[mem_name] = mem
                reset_peak_memory(device)  # CUDA: per-epoch peaks; CPU peak RSS is process-wide and never resets
                for k, v in scalars.items():
                    if k != "val_accuracy":
                        series = log.extra.setdefault(k, [math.nan] * (epoch - 1))
                        series.append(v)
                for series in log.extra.values():
                    if len(series) < epoch:
                        series.append(math.nan)
                if loop.on_epoch is not None:
                    loop.on_epoch(loop.label, epoch, {"loss": mean_loss, "epoch_seconds": t.seconds, **scalars})
                if resume is not None and epoch < recipe.epochs:  # the last epoch's state is the checkpoint itself
                    _save_epoch_state(resume, model, order, device, epoch, best_score, best_state, log)
        finally:
            if task is not None:
                loop.progress.remove(task)
    if best_state is not None:
        model.load_state_dict(best_state)
    log.peak_memory_metric = mem_name
    log.peak_memory_mb = max(log.extra[mem_name])
    return log


def _save_epoch_state(resume: EpochResume, model: nn.Module, order: torch.Generator, device: torch.device,
                      epoch: int, best_score: float, best_state: dict | None, log: TrainLog) -> None:
    state = {"format": 1, "epoch": epoch, "model": model.state_dict(),
             "parts": {name: _state_of(part) for name, part in resume.parts.items()},
             "order": order.get_state(), "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
             "best_score": best_score, "best_state": best_state, "log": dataclasses.asdict(log)}
    resume.cache.put_partial(resume.key, state)


def _state_of(part: Any) -> Any:
    return part.get_state() if isinstance(part, torch.Generator) else part.state_dict()


def _restore(part: Any, state: Any) -> None:
    if isinstance(part, torch.Generator):
        part.set_state(state)
    else:
        part.load_state_dict(state)


def _load_epoch_state(resume: EpochResume, model: nn.Module, order: torch.Generator, device: torch.device,
                      label: str) -> tuple[int, float, dict | None, TrainLog] | None:
    """Restore a saved epoch into ``model``, the parts and the random streams; (epoch, best score, kept weights,
    log), or None to train from the start (nothing saved, or a state that does not fit this training)."""
    state = resume.cache.get_partial(resume.key)
    if state is None:
        return None
    # a state that fails half-way (one tensor of another shape) must leave the training exactly as it was
    before = (copy.deepcopy(model.state_dict()), {n: copy.deepcopy(_state_of(p)) for n, p in resume.parts.items()},
              order.get_state(), torch.get_rng_state())
    try:
        if state.get("format") != 1 or set(state["parts"]) != set(resume.parts):
            raise ValueError("another layout")
        model.load_state_dict(state["model"])
        for name, part in resume.parts.items():
            _restore(part, state["parts"][name])
        order.set_state(state["order"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        log = TrainLog(**state["log"])
    except Exception as e:  # noqa: BLE001 - a state that does not fit: the training restarts, as without one
        model.load_state_dict(before[0])
        for name, part in resume.parts.items():
            _restore(part, before[1][name])
        order.set_state(before[2])
        torch.set_rng_state(before[3])
        warnings.warn(f"{label}: ignoring its saved epoch ({type(e).__name__}: {e}); training from epoch 1")
        return None
    best_state = state["best_state"]
    if best_state is not None:
        best_state = {k: v.to(device) for k, v in best_state.items()}
    return int(state["epoch"]), float(state["best_score"]), best_state, log


@contextlib.contextmanager
def training_layout(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Train a convolutional network in channels-last layout on a CPU: oneDNN's convolutions run a lenet training
    step ~1.4x faster that way (docs/performance.md). The weights go back to the default layout afterwards, so a
    network gives the same outputs whether it was just trained or loaded from the cache. Other devices and
    networks without a 2-D convolution are left as they are."""
    if device.type != "cpu" or not any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules()):
        yield
        return
    # inference_mode(False): converted inside an inference_mode block (``inference_layout`` under logits, features),
    # the weights would become inference tensors, which autograd (a later attack) refuses
    with torch.inference_mode(False):
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        with torch.inference_mode(False):
            model.to(memory_format=torch.contiguous_format)


def bench_built(model: nn.Module) -> bool:
    """Whether every module of ``model`` is bench's or torch.nn's own eager code. A user's network (its own class,
    TorchScript, an exported or traced graph) or a timm model may reshape activations with ``view``, which fails on
    channels-last strides, so ``inference_layout`` leaves those as they are."""
    for m in model.modules():
        if isinstance(m, (torch.jit.ScriptModule, torch.fx.GraphModule)):
            return False
        if type(m).__module__.split(".")[0] not in ("bench", "torch"):
            return False
    return True


@contextlib.contextmanager
def inference_layout(model: nn.Module, device: torch.device) -> Iterator[None]:
    """``training_layout`` for gradient-free inference passes of bench's own networks: oneDNN's channels-last
    convolutions run a lenet forward 1.9x faster on one thread (docs/performance.md). The weights are put back
    afterwards, so every pass, of a fresh or a cached network, runs in the same layout and scores alike. Passes that
    need input gradients (attacks, ODIN) keep the default layout: a lenet input-gradient pass was slower
    channels-last on one thread."""
    if not bench_built(model):
        yield
        return
    with training_layout(model, device):
        yield


class Stepper:
    """One optimiser update per call: zero grads, backward, optional grad-norm clipping (``recipe.grad_clip``),
    step; the recipe's scheduler is stepped once per epoch, after the epoch's last batch (``cosine_iter``: after
    every update)."""

    def __init__(self, params, recipe: TrainRecipe, n_batches: int):
        self.params = list(params)
        self.recipe = recipe
        self.n_batches = max(n_batches, 1)
        self.opt = build_optimizer(self.params, recipe)
        self.sched = build_scheduler(self.opt, recipe, self.n_batches)
        self.count = 0  # updates so far

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict() if self.sched is not None else None,
                "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])
        self.count = int(state["count"])

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        self.opt.step()
        self.count += 1
        if self.sched is not None and (self.recipe.scheduler == "cosine_iter" or self.count % self.n_batches == 0):
            self.sched.step()
        return loss


def new_classifier(backbone: str, num_classes: int, seed: int, recipe: TrainRecipe, device: torch.device,
                   n_train: int, shape: tuple[int, int, int] = (1, 28, 28)) -> tuple[nn.Module, Stepper]:
    """A backbone for images of ``shape`` initialised from ``seed`` and its ``Stepper`` for the recipe (batches per
    epoch from n_train)."""
    from bench.methods.core.backbones import create_backbone

    seed_stream(seed)
    model = create_backbone(backbone, num_classes, shape=shape).to(device)
    return model, Stepper(model.parameters(), recipe, math.ceil(n_train / recipe.batch_size))


def compiled_forward(model: Callable[..., Any], mode: str, options: dict[str, Any] | None = None
                     ) -> Callable[..., Any]:
    """``model``'s forward (or any training function of tensors: a forward and its loss), through
    ``torch.compile(mode=...)`` unless mode is "none". A compiled module shares the model's parameters, so the
    optimiser, validation and the saved state dict keep using ``model`` itself. Shapes are static: one graph per batch
    size (the epoch's last, smaller batch gets its own). Under "reduce-overhead" each call begins a new CUDA-graph
    step: an output kept past the next call must be cloned."""
    if mode == "none":
        return model
    # inductor's own settings (``options``) exclude ``mode`` in torch.compile: they are patched in for this function
    net = torch.compile(model, mode=mode, dynamic=False) if not options else torch.compile(
        model, dynamic=False, options={**torch._inductor.list_mode_options(mode), **options})
    if mode != "reduce-overhead":
        return net

    def forward(*args: Any) -> Any:
        # CUDA graph trees: a new step begins here, so the previous step's outputs may be overwritten (the loop has
        # consumed them: the loss is summed and backpropagated before the next call)
        torch.compiler.cudagraph_mark_step_begin()
        return net(*args)

    return forward


def fixed_shape(fn: Callable[[torch.Tensor], Any], mode: str, batch_size: int) -> Callable[[torch.Tensor], Any]:
    """An inference function (a batch -> tensor or tuple of tensors, the network alone) through
    ``torch.compile(mode=...)`` for one batch shape, unless mode is "none": a shorter batch (an eval set's last, or a
    set smaller than ``batch_size``) is zero-padded to ``batch_size`` and its outputs cut back, so every set runs
    the one graph (captured once under "reduce-overhead" on CUDA, then replayed). Rows are independent in eval mode,
    so the padding changes no output; the cut outputs are copies, since a CUDA graph's replay overwrites its
    outputs."""
    if mode == "none":
        return fn
    net = compiled_forward(fn, mode)

    def run(x: torch.Tensor) -> Any:
        n = x.shape[0]
        # always a new tensor, padding or not: a batch that is a view of the caller's tensor and one made under
        # inference_mode differ in dispatch keys, and dynamo would trace the same shape twice
        x = torch.cat([x, x.new_zeros(max(0, batch_size - n), *x.shape[1:])])
        out = net(x)
        return tuple(o[:n].clone() for o in out) if isinstance(out, tuple) else out[:n].clone()

    return run


def supervised_step(model: nn.Module, stepper: Stepper) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """A plain cross-entropy step (the forward compiled when the recipe says ``compile``)."""
    loss_fn = nn.CrossEntropyLoss()
    forward = compiled_forward(model, stepper.recipe.compile)

    def step(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return stepper(loss_fn(forward(x), y))

    return step
