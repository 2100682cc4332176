"""The template every confidence method fills in (torchattacks' ``Attack`` manner): this base owns device, mode
switching, batching, no-grad, seeding and checkpoint round-trips; a method file writes only its algorithm.

Conventions, stated once: inputs are images in [0, 1] (uint8 [0, 255] is accepted and converted), shape
(N, 1, 28, 28) for MNIST-like data; ``predict`` returns class probabilities (N, C) and a confidence (N,) where
HIGHER = MORE TRUSTWORTHY.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple

import torch
from torch import nn

from bench.cache import CheckpointCache
from bench.datasets.mnist import ImageSet, to_float
from bench.errors import NotFittedError
from bench.methods.core.backbones import MNIST_SHAPE, create_backbone
from bench.methods.core.training import (
    EpochResume,
    Loop,
    Stepper,
    TrainLog,
    TrainRecipe,
    eval_mode,
    fit_loop,
    fixed_shape,
    forked_rng,
    generator,
    inference_layout,
    new_classifier,
    seed_stream,
    supervised_step,
)
from bench.utils import stable_hash

CACHE_VERSION = 1  # bump when training code changes in a way that invalidates cached checkpoints


def image_shape(data: ImageSet) -> tuple[int, int, int]:
    """(C, H, W) of a set's images."""
    return tuple(int(d) for d in data.images.shape[1:])  # type: ignore[return-value]


class Prediction(NamedTuple):
    probs: torch.Tensor  # (N, C) float32, CPU
    confidence: torch.Tensor  # (N,) float32, CPU, higher = more trustworthy
    #: (N, C) float32, CPU: the classifier's logits when inference computed them anyway (the default
    #: ``_predict_batch``, ``predict_from_logits``); None for methods with their own inference (MC-dropout, ODIN, ...)
    logits: torch.Tensor | None = None


@dataclass(frozen=True)
class NoConfig:
    """A method without options."""


class Training(enum.Enum):
    """How a method gets its classifier: every registered method declares one (``training = Training.X``);
    ``register`` refuses a class that does not, so a trainer that forgets to say so fails at import instead of
    silently sharing the baseline."""

    #: its network IS the run's plain cached baseline (post-hoc scorers, MC-dropout; ``_fit`` may add fitted state
    #: on top, e.g. a temperature): the runner fits these together on one baseline, and they run on a user's model
    SHARED_BASELINE = "shared-baseline"
    #: reads the cached baseline(s) and never trains them; fits only what it adds (ConfidNet's head, trust score's
    #: training features, an ensemble's members): runs on a user's model, but in its own grid unit
    FROZEN_BASELINE = "frozen-baseline"
    #: trains its own classifier (overrides ``_fit``)
    OWN = "own"


@dataclass
class FitContext:
    """What the runner lends a method during ``fit``: device, recipe, data identity, caches and progress."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    split_id: str = "custom"
    cache: CheckpointCache | None = None
    progress: Any = None
    #: called after every epoch of every fit as ``on_epoch(label, epoch, scalars)`` (TensorBoard, live logs)
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None
    #: the run's data folder (--data-dir), for methods that fit on a data set of their own (mdsens on notMNIST)
    data_dir: Path | None = None

    def baseline_key(self, backbone: str, num_classes: int, seed: int) -> str:
        return "baseline-" + stable_hash(
            {"backbone": backbone, "classes": num_classes, "recipe": self.recipe, "seed": seed,
             "split": self.split_id, "version": CACHE_VERSION})

    def train_baseline(self, backbone: str, num_classes: int, seed: int, train: ImageSet, val: ImageSet
                       ) -> tuple[nn.Module, TrainLog, str]:
        """The plain cross-entropy classifier of (backbone, recipe, seed, split), trained once and cached, so
        inference-only methods (msp, mcdropout, post-hoc scorers) share it instead of retraining."""
        key = self.baseline_key(backbone, num_classes, seed)
        shape = image_shape(train)
        with self._locked(key):  # parallel workers: one trains, the others wait and load
            hit = None if self.cache is None else self.cache.get(key)
            model = create_backbone(backbone, num_classes, shape=shape)
            if hit is not None:
                model.load_state_dict(hit["model"])
                return model.to(self.device), TrainLog(**hit["log"]), key
            with forked_rng(self.device):
                model, stepper = new_classifier(backbone, num_classes, seed, self.recipe, self.device, len(train),
                                                shape)
                log = fit_loop(model, supervised_step(model, stepper), train, val, self.recipe,
                               self.loop(f"{backbone} seed {seed}", seed), resume=self.epoch_resume(key, stepper))
            if self.cache is not None:
                self.cache.put(key, {"model": model.state_dict(), "log": dataclasses.asdict(log)})
        return model, log, key

    def loop(self, label: str, seed: int) -> Loop:
        """Where a training loop of this fit runs: the device, batch order from ``seed``, progress and logger."""
        return Loop(self.device, seed, label, self.progress, self.on_epoch)

    def epoch_resume(self, key: str, stepper: Any, **parts: Any) -> EpochResume | None:
        """Save the training of checkpoint ``key`` after every epoch, so an interrupted run continues it (None
        without a cache): ``stepper`` (what makes the optimiser steps: a ``Stepper``, or a method's own trainer with
        ``state_dict``) and ``parts`` must hold all of the training's state beside the model."""
        return EpochResume(self.cache, key, {"stepper": stepper, **parts}) if self.cache is not None else None

    def _locked(self, key: str):
        """The cache's cross-process lock of ``key`` (nothing to lock without a cache)."""
        return self.cache.lock(key) if self.cache is not None else contextlib.nullcontext()

    def fit_method(self, name: str, backbone: str, num_classes: int, seed: int, train: ImageSet, val: ImageSet,
                   config: Any = None) -> "ConfidenceMethod":
        """Any registered method (default config unless ``config``) of this recipe, split and seed, fitted once and
        kept in the checkpoint cache under its own ``cache_key``, in the runner's format, so a teacher shares its
        checkpoint with the run's own cell of that method (e.g. ``distill`` fitting ``ensemble``)."""
        from bench.methods.core.registry import METHODS

        cls = METHODS.get(name)
        m = cls(config, backbone=backbone, num_classes=num_classes, seed=seed, shape=image_shape(train))
        key = m.cache_key(self)
        with self._locked(key):
            hit = None if self.cache is None else self.cache.get(key)
            if hit is not None:
                return m.load_checkpoint(hit, self.device)
            m.fit(train, val, self)
            if self.cache is not None:
                self.cache.put(key, m.checkpoint())
        return m


class ConfidenceMethod:
    """Base class. Subclasses set ``name`` (via the registry), ``Config``, declare ``training``, implement ``_fit``
    unless they share the baseline, and override ``score_logits`` (post-hoc scorers) or ``_predict_batch``
    (methods with their own inference).

    Training template: ``fit`` runs ``_fit`` in a forked random stream (a fit never shifts the caller's draws);
    inside, ``seed_rng()`` seeds it right before the networks to train are built, ``generator(offset)`` gives a
    stream of its own (coins, random starts), ``loop(ctx)`` says where ``fit_loop`` runs, ``eval_mode`` and
    ``frozen`` (methods/core/training.py) switch modes and gradients and restore them, ``TrainLog.concat`` joins phases.
    docs/adding-a-method.md walks through a complete training method."""

    Config: ClassVar[type] = NoConfig
    #: How the method gets its classifier (see ``Training``); declared by every registered method.
    training: ClassVar[Training | None] = None
    #: True if the confidence is a function of the baseline logits alone (logits are then shared per eval set).
    posthoc: ClassVar[bool] = False
    #: True if predict draws random numbers (it is then seeded from ``seed`` so it is reproducible).
    stochastic: ClassVar[bool] = False
    #: True if a post-hoc scorer reads the penultimate features too (``score_features``); the runner then shares
    #: one (features, logits) pass per eval set among them, as it shares logits among logit scorers.
    uses_features: ClassVar[bool] = False
    #: True if predict needs input gradients (ODIN): it then runs outside inference_mode.
    needs_grad: ClassVar[bool] = False
    #: Bump when this method's training changes what it learns; 0 keeps the key as it was before the field existed.
    training_version: ClassVar[int] = 0
    #: Contract-suite checks this method declares it cannot meet, ``{"check name": "why"}``: each becomes a strict
    #: xfail (tests/test_contract.py), so it is noticed the day the method starts meeting it.
    contract_xfail: ClassVar[dict[str, str]] = {}
    #: True if the method reads penultimate features (``forward_features``, ``forward_head``, ``num_features``).
    needs_features: ClassVar[bool] = False
    #: True if the method needs dropout layers in the classifier (MC-dropout).
    needs_dropout: ClassVar[bool] = False
    #: Why the method runs on 28x28 grey images only (nets of its own built for that shape); "" = any shape. A run
    #: on a user's --data of another shape refuses it with this reason (datasets/user_data.py).
    mnist_only: ClassVar[str] = ""
    #: Rough cost of the method's unit in a grid, in baseline trainings (a scheduling hint, never a result): with
    #: several workers the heaviest units start first, so that one long unit does not run alone at the end.
    grid_weight: ClassVar[float] = 1.0

    def __init__(self, config: Any = None, *, backbone: str = "lenet", num_classes: int = 10, seed: int = 0,
                 shape: tuple[int, int, int] = MNIST_SHAPE):
        self.config = config if config is not None else self.Config()
        self.backbone = backbone
        self.num_classes = num_classes
        self.seed = seed
        self.shape = tuple(int(d) for d in shape)  # (C, H, W) of the images its networks are built for
        self.model: nn.Module | None = None
        self.train_log: TrainLog | None = None
        self.baseline_key: str | None = None
        self.device = torch.device("cpu")
        #: torch.compile mode of the network's inference forward (the run's ``eval.compile``): "none" (eager),
        #: "default", or "reduce-overhead" (CUDA graphs on a GPU). Applies to logits, features and the default
        #: predict; a method with its own ``_predict_batch`` (several passes, input gradients) stays eager
        self.eval_compile = "none"

    # --- lifecycle -------------------------------------------------------------------------------------------
    def fit(self, train: ImageSet, val: ImageSet, ctx: FitContext | None = None) -> "ConfidenceMethod":
        ctx = ctx or FitContext()
        self.device = ctx.device
        self.shape = image_shape(train)  # the networks it builds take the images it is fitted on
        train, val = train.to(ctx.device), val.to(ctx.device)
        with forked_rng(ctx.device):  # the fit's draws (init, dropout, noise) never shift the caller's stream
            self._fit(train, val, ctx)
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}._fit did not set self.model")
        return self

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        """Default (``Training.SHARED_BASELINE`` only): the cached baseline classifier of this backbone and seed."""
        self.model, self.train_log, self.baseline_key = ctx.train_baseline(
            self.backbone, self.num_classes, self.seed, train, val)

    # --- training template (for ``_fit``) --------------------------------------------------------------------
    def new_training(self, ctx: FitContext, train: ImageSet, epochs: int = 0) -> tuple[TrainRecipe, nn.Module, Any]:
        """The usual start of a method that trains its own network: its recipe (the run's, ``epochs`` when not 0),
        the seeded ``build_model()`` on the device, and its ``Stepper`` (batches per epoch from ``train``)."""
        recipe = ctx.recipe.but(self.name, epochs=epochs or None)
        self.seed_rng()
        model = self.build_model().to(ctx.device)
        return recipe, model, Stepper(model.parameters(), recipe, math.ceil(len(train) / recipe.batch_size))

    def seed_rng(self) -> None:
        """Seed the fit's random stream with the method's seed: call it once, right before building the networks
        the method trains (their initialisation, then the dropout masks and noise of training, follow from it)."""
        seed_stream(self.seed)

    def generator(self, offset: int) -> torch.Generator:
        """A generator of its own, seeded ``seed + offset`` (coins, random starts): it never shifts other draws."""
        return generator(self.seed + offset)

    def loop(self, ctx: FitContext, phase: str = "", order_seed: int | None = None) -> Loop:
        """Where this method's ``fit_loop`` runs (device, progress, logger, label "<name> [phase] <backbone> seed
        <s>"); the batch order follows ``order_seed`` (default: the method's seed)."""
        label = " ".join(p for p in (self.name, phase, self.backbone, f"seed {self.seed}") if p)
        return ctx.loop(label, self.seed if order_seed is None else order_seed)

    def build_model(self) -> nn.Module:
        """An untrained model of the right shape, for ``load_state_dict``."""
        return create_backbone(self.backbone, self.num_classes, shape=self.shape)

    @property
    def classifier(self) -> nn.Module:
        """Differentiable images -> logits module, for white-box attacks."""
        return self._fitted_model()

    def eot_classifier(self) -> nn.Module | None:
        """The classifier with the method's randomness drawn anew at every forward pass, for expectation-over-
        transformation attacks (datasets/eot.py); None for a method without randomness (its expectation is the
        plain attack). A ``stochastic`` method: ``classifier`` with its dropout on."""
        if not self.stochastic:
            return None
        from bench.datasets.eot import DropoutOn

        return DropoutOn(self.classifier)

    @property
    def forward_passes(self) -> int:
        """Forward passes of the classifier per sample at inference."""
        return 1

    def _fitted_model(self) -> nn.Module:
        if self.model is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load_state_dict() first")
        return self.model

    # --- inference -------------------------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, batch_size: int = 2048) -> Prediction:
        # with the default _predict_batch the logits pass through here anyway: keep them (no extra pass)
        default = type(self)._predict_batch is ConfidenceMethod._predict_batch
        outs = self._batched(self._scored_logits(batch_size) if default else self._predict_batch, x, batch_size)
        probs = torch.cat([o[0] for o in outs]).float().cpu() if outs else torch.empty(0, self.num_classes)
        conf = torch.cat([o[1] for o in outs]).float().cpu() if outs else torch.empty(0)
        if not default:
            return Prediction(probs, conf)
        logits = torch.cat([o[2] for o in outs]).float().cpu() if outs else torch.empty(0, self.num_classes)
        return Prediction(probs, conf, logits)

    def _scored_logits(self, batch_size: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
        forward = self._inference(self._fitted_model(), batch_size)

        def scored(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits = forward(x)
            return (*self.score_logits(logits), logits)

        return scored

    def _inference(self, fn: Callable[[torch.Tensor], Any], batch_size: int) -> Callable[[torch.Tensor], Any]:
        """``fn`` (the network's forward, or its features and head) as the run's ``eval.compile`` says."""
        return fixed_shape(fn, getattr(self, "eval_compile", "none"), batch_size)

    def logits(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """The classifier's logits (eval mode), e.g. to share one forward pass among post-hoc scorers."""
        with torch.inference_mode():  # no autograd, also for methods whose predict needs it (ODIN)
            outs = self._batched(self._inference(self._fitted_model(), batch_size), x, batch_size, grad_free=True)
        return torch.cat(outs).float().cpu() if outs else torch.empty(0, self.num_classes)

    def features(self, x: torch.Tensor, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, F) and logits (N, C) of the classifier in one pass (eval mode), to share among
        feature scorers; the logits are those of ``logits`` (``forward`` is ``forward_head o forward_features``)."""
        model = self._fitted_model()

        def both(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = model.forward_features(xb)
            return f, model.forward_head(f)

        with torch.inference_mode():  # as in logits
            outs = self._batched(self._inference(both, batch_size), x, batch_size, grad_free=True)
        if not outs:
            return torch.empty(0, 0), torch.empty(0, self.num_classes)
        return torch.cat([o[0] for o in outs]).float().cpu(), torch.cat([o[1] for o in outs]).float().cpu()

    def _batched(self, fn, x: torch.Tensor, batch_size: int, grad_free: bool = False) -> list:
        """Apply ``fn`` to [0, 1] float batches on the device, in eval mode under inference_mode (seeded for
        stochastic methods; with autograd on for ``needs_grad`` methods); every module's train/eval mode is
        restored afterwards."""
        model = self._fitted_model()
        no_grad = contextlib.nullcontext() if self.needs_grad else torch.inference_mode()
        rng = forked_rng(self.device, self.seed) if self.stochastic else contextlib.nullcontext()
        # channels-last for passes without input gradients (``grad_free``: logits and features, of every method)
        fast = (grad_free or not self.needs_grad) and getattr(self, "eval_compile", "none") == "none"
        layout = inference_layout(model, self.device) if fast else contextlib.nullcontext()
        with layout, eval_mode(model), no_grad, rng:
            return [fn(to_float(x[i : i + batch_size]).to(self.device)) for i in range(0, len(x), batch_size)]

    def predict_from_logits(self, logits: torch.Tensor) -> Prediction:
        """For post-hoc methods: score precomputed baseline logits (shared across scorers of one eval set)."""
        if not self.posthoc:
            raise TypeError(f"{type(self).__name__} is not a post-hoc scorer")
        if self.uses_features:
            raise TypeError(f"{type(self).__name__} scores features; use predict_from_features")
        with torch.inference_mode():
            probs, conf = self.score_logits(logits.float())
        return Prediction(probs.float().cpu(), conf.float().cpu(), logits.float().cpu())

    def predict_from_features(self, features: torch.Tensor, logits: torch.Tensor) -> Prediction:
        """For feature scorers: score precomputed (features, logits) of the baseline (shared per eval set)."""
        if not self.uses_features:
            raise TypeError(f"{type(self).__name__} does not score features")
        with torch.inference_mode():
            probs, conf = self.score_features(features.float(), logits.float())
        return Prediction(probs.float().cpu(), conf.float().cpu(), logits.float().cpu())

    def score_features(self, features: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature scorers: (probabilities, confidence) from penultimate features and logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_features")

    @classmethod
    def check_eval_sets(cls, config: Any, datasets: list[str], data_dir: Path) -> None:
        """Checks of the method's options against the run's eval sets and data folder, before any training (one-line
        UsageError or DataError); e.g. a method that fits on validation OOD data must not be tested on those images."""

    @classmethod
    def preflight(cls, config: Any, net: nn.Module, n_train: int) -> dict[str, Any]:
        """Checks that need the network (an untrained backbone of the run, or a user's model) or the training-set
        size, run before any training (one-line UsageError); returns the hyper-parameters the method will use (its
        config plus what it derives from the network), for the run manifest."""
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_logits(self._fitted_model()(x))

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Default scorer: softmax probabilities and their maximum (MCP)."""
        probs = logits.softmax(1)
        return probs, probs.max(1).values

    # --- checkpoints -----------------------------------------------------------------------------------------
    def cache_key(self, ctx: FitContext) -> str:
        parts = {"method": self.name, "config": self.config, "backbone": self.backbone, "classes": self.num_classes,
                 "seed": self.seed, "recipe": ctx.recipe, "split": ctx.split_id, "version": CACHE_VERSION}
        if self.training_version:  # only when set, so the keys of every other method (and their caches) stay valid
            parts["method_version"] = self.training_version
        return f"{self.name}-" + stable_hash(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self._fitted_model().state_dict(), "extra": self.extra_state(),
                "baseline_key": self.baseline_key}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None
                        ) -> "ConfidenceMethod":
        self.device = torch.device(device) if device is not None else self.device
        model = self.build_model()
        model.load_state_dict(state["model"])
        self.model = model.to(self.device)
        self.baseline_key = state.get("baseline_key")
        self.load_extra_state(state.get("extra", {}))
        return self

    def checkpoint(self) -> dict[str, Any]:
        """What the checkpoint cache stores for a fitted method: its state and the training log (so a cache hit
        still reports the cost measured when it was trained)."""
        return {"state": self.state_dict(),
                "log": dataclasses.asdict(self.train_log) if self.train_log else None}

    def load_checkpoint(self, checkpoint: dict[str, Any], device: torch.device | str | None = None
                        ) -> "ConfidenceMethod":
        self.load_state_dict(checkpoint["state"], device=device)
        self.train_log = TrainLog(**checkpoint["log"]) if checkpoint.get("log") else None
        return self

    def extra_state(self) -> dict[str, Any]:
        """Learned state beyond the model weights (e.g. a temperature); override with ``load_extra_state``."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    name: ClassVar[str] = "base"


def register(name: str, description: str | None = None):
    """Register a method class under ``name`` (sets ``cls.name``)."""
    from bench.methods.core.registry import METHODS

    def deco(cls: type[ConfidenceMethod]) -> type[ConfidenceMethod]:
        check_declarations(cls, name)
        cls.name = name
        from bench.methods.core.options import Options

        if isinstance(cls.Config, type) and issubclass(cls.Config, Options):
            own = vars(cls.Config).get("section")
            if own is not None and own != name:
                raise TypeError(f"method {name!r}: its config says section = {own!r}; a config's section is its "
                                "method's registered name (set by register: leave it out)")
            cls.Config.section = name  # its options are <name>.<key> in --set and in every error message
        METHODS.add(name, cls, description)
        return cls

    return deco


def check_declarations(cls: type[ConfidenceMethod], name: str) -> None:
    """Refuse (TypeError, at import) a method class whose declared capabilities contradict its code."""
    if not isinstance(cls.training, Training):
        raise TypeError(f"method {name!r} ({cls.__name__}) must declare how it gets its classifier: training = "
                        "Training.SHARED_BASELINE, FROZEN_BASELINE or OWN (methods/core/base.py)")
    if cls.training is not Training.SHARED_BASELINE and cls._fit is ConfidenceMethod._fit:
        raise TypeError(f"method {name!r} ({cls.__name__}) declares training = {cls.training} but does not "
                        "override _fit, so it would fit the shared baseline")
    if cls.posthoc and cls.training is not Training.SHARED_BASELINE:
        raise TypeError(f"method {name!r} ({cls.__name__}) is posthoc (scores the baseline's logits), so its "
                        "training must be Training.SHARED_BASELINE")
