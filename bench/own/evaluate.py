"""``bench.evaluate``: score classifiers a user trained (any ``nn.Module`` images in [0, 1] -> logits) with bench's
methods on bench's evaluation sets, through the same runner as ``bench run`` (bench/run/runner.py): one forward pass
per eval set shared by the post-hoc scorers, white-box attacks built against the user's model, the same tidy rows
and run directory. What differs: the "baseline" a method gets is the user's model (bench/own/model.py), nothing
is trained or cached for it, and each model is a unit of its own.

Rows name the method ``<method>@<model>`` (backbone column: the model's name), so that a run of user models and
``bench run`` runs can be reported together, and several models in one run stay apart.
"""

from __future__ import annotations

import numbers
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from torch import nn

from bench.errors import BenchError, UsageError
from bench.methods.core.base import ConfidenceMethod, Training
from bench.own.model import UserFitContext, UserModel, has_dropout, preserved
from bench.run.grid import COST_SET, Unit, shares_baseline
from bench.run.progress import Bars
from bench.run.runner import Runner, RunOutcome
from bench.run.store import ROW_FIELDS, cell_key, check_name
from bench.run.worker import UnitWorker

DATA_CLASSES = {"mnist": 10}
PROBE_IMAGES = 8


def label(method: str, model: str) -> str:
    """The method column of a user model's rows."""
    return f"{method}@{model}"


@dataclass(frozen=True)
class UserUnit(Unit):
    """A unit of one user model (``model``), or of all of them for an ensemble (``model`` = "")."""

    model: str = ""

    @property
    def name(self) -> str:
        return f"{super().name} model {self.model or 'ensemble'}"

    @property
    def marker(self) -> str:
        return f"{super().marker}__{self.model or 'ensemble'}"


def supports(cls: type[ConfidenceMethod]) -> bool:
    """A method runs on a user's model when it only reads a trained classifier."""
    return shares_baseline(cls) or cls.training is Training.FROZEN_BASELINE


def expand_methods(patterns: list[str], models: list[UserModel]) -> list[str]:
    """Method names and wildcards for models you bring: a wildcard takes the methods that can score these models
    (``--methods 'trust*'`` is trustscore, not trustgan, which trains its own classifier; ``'*'`` leaves out what a
    model without features or dropout cannot run); a name is kept as given, so that ``check_methods`` says why it
    cannot run."""
    from bench.methods import METHODS

    out: list[str] = []
    for p in patterns:
        names = METHODS.expand([p])
        if any(c in p for c in "*?["):
            names = [n for n in names if _runs_on(n, models)]
            if not names:
                raise UsageError(f"--methods {p!r} matches no method that can score the model(s) you bring (methods "
                                 "that train their own classifier cannot; see docs/byom.md)")
        out.extend(n for n in names if n not in out)
    return out


def _runs_on(name: str, models: list[UserModel]) -> bool:
    try:
        check_methods([name], models)
    except UsageError:
        return False
    return True


def check_methods(methods: list[str], models: list[UserModel]) -> None:
    """Refuse, before any work, every method that cannot run on these models (one line each, the first one)."""
    from bench.methods import METHODS

    ok = [m for m in METHODS.names() if supports(METHODS.get(m)) and m != "ensemble"]
    for name in methods:
        cls = METHODS.get(name)
        if not supports(cls):
            raise UsageError(f"{name} trains its own classifier, so it cannot score a model you bring; run it on "
                             f"bench's backbones (bench run --methods {name}) or pick one of {', '.join(ok)}")
        if name == "ensemble" and len(models) < 2:
            raise UsageError("ensemble needs several models: pass a list (bench.evaluate([m1, m2, ...])) or "
                             "repeat --model")
        for m in models:
            if cls.needs_features and m.feature_problem:
                raise UsageError(f"{name} needs penultimate features: {m.feature_problem}")
            if cls.needs_dropout and not has_dropout(m.model):
                raise UsageError(f"{name} needs dropout layers (nn.Dropout*) and model {m.name} has none; drop "
                                 f"{name}, or pass the Python module (a TorchScript model's dropouts are hidden)")


class UserModelWorker(UnitWorker):
    """The runner's worker, fitting each method on a user model (or all of them, for an ensemble)."""

    def __init__(self, *args: Any, models: list[UserModel], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.models = {m.name: m for m in models}
        self._model = ""

    def run_unit(self, unit: Unit):
        self._model = getattr(unit, "model", "")
        return super().run_unit(unit)

    def _name(self) -> str:
        return self._model or "+".join(self.models)

    def row_method(self, method: str) -> str:
        return label(method, self._name())

    def _fit(self, spec, method: str, seed: int) -> tuple[ConfidenceMethod, str]:
        from bench.datasets.splits import split
        from bench.methods import METHODS

        models = [self.models[self._model]] if self._model else list(self.models.values())
        cls = METHODS.get(method)
        m = cls(cls.Config(**self.cfg.options_for(method)), backbone=self._name(),
                num_classes=models[0].num_classes, seed=seed)
        ctx = UserFitContext(device=self.device, recipe=self.cfg.train, split_id=spec.split_id, progress=self.bars,
                             on_epoch=None, models=models, base_seed=seed, data_dir=Path(self.cfg.data_dir))
        m.fit(*split(self._train_full, spec), ctx)
        # a method whose classifier is the user's model itself shares its attacked eval sets with the others
        key = models[0].key if m.classifier is models[0] else f"{method}:{self._name()}"
        return m, key


class UserRunner(Runner):
    """``Runner`` over user models: one unit per (fold, seed, model) plus one for an ensemble of them."""

    def __init__(self, cfg, run_dir: Path, models: list[UserModel], **kwargs: Any):
        self.models = models  # before the base's preflight, which checks the methods against these models
        hashes = {m.name: m.content_hash() for m in models}
        earlier = _earlier_models(run_dir) if kwargs.get("resume") else {}
        for name, h in hashes.items():  # before the base prepares (and rewrites) anything of the run
            if name in earlier and "sha256" not in earlier[name]:
                raise UsageError(f"--resume: this run's manifest has no content hash of model {name} (an older "
                                 "bench), so bench cannot tell it is the same model; use another --out")
            if name in earlier and earlier[name]["sha256"] != h:
                raise UsageError(f"--resume: model {name} is not the model this run scored under that name (its "
                                 "content hash differs); give it another --model-name, or another --out")
        super().__init__(cfg, run_dir, **kwargs)
        manifest = self.store.read_manifest() or {}
        entries = {name: e for name, e in earlier.items() if name not in hashes}  # their cells stay in the run
        entries.update({m.name: {
            "name": m.name, "class": type(m.model).__name__, "origin": getattr(m, "origin", "python object"),
            "num_classes": m.num_classes, "feature_source": m.source if not m.feature_problem else "",
            "num_features": m.num_features, "params": sum(p.numel() for p in m.model.parameters()),
            "sha256": hashes[m.name]} for m in models})
        manifest["user_models"] = list(entries.values())
        # the cells this run will hold, for reports (its method labels are not the config's method names)
        ensemble = "+".join(a.name for a in models)
        manifest["cells"] = [[label(m, getattr(u, "model", "") or ensemble), u.seed, u.fold, ds]
                             for u in self.plan() for m in u.methods for ds in [*self.datasets, COST_SET]]
        self.store.write_manifest(manifest)

    def _preflight_nets(self):
        return lambda method, config: self.models

    def make_executor(self, n_units: int):
        """Always this process: the user's models are Python objects of this process (worker processes, which
        ``--jobs auto`` starts for a grid of several units, would not have them)."""
        from bench.run.executors import Sequential

        return Sequential(self.job())

    def plan(self) -> list[Unit]:
        singles = tuple(m for m in self.methods if m != "ensemble")
        units: list[Unit] = []
        for fold in range(self.cfg.folds):
            for seed in self.cfg.seeds:
                if singles:
                    units.extend(UserUnit(fold, seed, singles, model=m.name) for m in self.models)
                if "ensemble" in self.methods:
                    units.append(UserUnit(fold, seed, ("ensemble",), model=""))
        return units

    def unit_keys(self, unit: Unit) -> list[str]:
        name = getattr(unit, "model", "") or "+".join(m.name for m in self.models)
        return [cell_key(label(m, name), unit.seed, unit.fold, ds) for m in unit.methods
                for ds in [*self.datasets, COST_SET]]

    def make_worker(self, bars: Bars) -> UnitWorker:
        return UserModelWorker(self.cfg, self.store.dir, self.cache, self.device, self.datasets, source=self.source,
                               bars=bars, models=self.models)

    def _collect(self, out: RunOutcome, result) -> None:
        result.checkpoints = []  # nothing of a user model is in bench's checkpoint cache
        super()._collect(out, result)


def _earlier_models(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The models a run being resumed scored, by name (from its manifest; none if it has none)."""
    from bench.run.store import RunStore

    try:
        manifest = RunStore(run_dir).read_manifest() or {}
    except BenchError:
        return {}  # a corrupt manifest is the base runner's to report
    entries = manifest.get("user_models") or []
    return {e["name"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}


def _strings(value: Any, what: str, example: str) -> list[str]:
    """A name or a list/tuple of names, else one line (a bare ``list(value)`` would split a string into letters or
    fail with a TypeError far from the argument)."""
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(v, str) for v in items):
        raise UsageError(f"{what}={value!r} must be a name or a list of names, e.g. {what}={example}")
    return items


def _seeds(seed: Any) -> list[int]:
    """An int or a list/tuple of ints; a string is refused (``list("12")`` is the seeds 1 and 2)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    items = [seed] if is_int(seed) else list(seed) if isinstance(seed, (list, tuple)) else None
    if items is None or not all(is_int(v) for v in items):
        raise UsageError(f"seed={seed!r} must be an int or a list of ints, e.g. seed=0 or seed=[0, 1, 2]")
    return [int(v) for v in items]


def check_arguments(**args: Any) -> None:
    """The types of ``evaluate``'s plain arguments, one line each (before anything runs)."""
    for key in ("data", "device", "profile"):
        if not isinstance(args[key], str):
            raise UsageError(f"{key}={args[key]!r} must be a string")
    if args["feature_layer"] is not None and not isinstance(args["feature_layer"], str):
        raise UsageError(f"feature_layer={args['feature_layer']!r} must be the name of a submodule (a string) or None")
    if args["options"] is not None and not isinstance(args["options"], dict):
        raise UsageError(f"options={args['options']!r} must be a dict of 'section.key' -> value, e.g. "
                         "{'eval.max_eval': 1000}")


def _names(models: list[nn.Module], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = _strings(names, "names", "['mine']")
        if len(names) != len(models):
            raise UsageError(f"{len(names)} names for {len(models)} models; give one name per model")
        if len(set(names)) != len(names) or any(not n or "@" in n for n in names):
            raise UsageError(f"model names {names} must be distinct, non-empty and without '@'")
        for n in names:  # a model's name is part of its cells' file names
            check_name(n, "model name")
        return names
    base = [type(m).__name__ for m in models]
    return [b if base.count(b) == 1 else f"{b}-{i}" for i, b in enumerate(base)]


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``{"mcdropout.passes": 10, "eval.max_eval": 1000}`` -> the nested layer config.resolve reads."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        parts = str(key).split(".")
        if len(parts) != 2 or not all(parts):
            raise UsageError(f"option {key!r} is malformed; use 'section.key', e.g. 'mcdropout.passes'")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def prepare(model: nn.Module | Sequence[nn.Module], *, methods: str | Sequence[str] = ("msp",),
            datasets: str | Sequence[str] | None = None, data: str = "mnist", device: str = "auto",
            seed: int | Sequence[int] = 0, names: str | Sequence[str] | None = None,
            feature_layer: str | None = None, profile: str = "quick", options: dict[str, Any] | None = None,
            layers: list[dict[str, Any]] | None = None) -> tuple[Any, list[UserModel]]:
    """Every check of ``evaluate``, before anything is written: (resolved config, adapted models on the device).
    ``layers`` (the CLI's profile/flags/--set) replaces profile, options, methods, datasets, seed and device."""
    from bench.config import load_profile, resolve
    from bench.datasets import evalsets
    from bench.methods import METHODS
    from bench.utils import resolve_device

    check_arguments(data=data, device=device, profile=profile, feature_layer=feature_layer, options=options)
    if data not in DATA_CLASSES and "=" not in str(data):
        raise UsageError(f"data={data!r}: use 'mnist' or your own labelled dataset as 'NAME=PATH' (an .npz, IDX "
                         "files IMAGES,LABELS or a folder of class subfolders; docs/your-data.md)")
    raw = list(model) if isinstance(model, (list, tuple)) else [model]
    if not raw:
        raise UsageError("no model given; pass an nn.Module or a list of them")
    model_names = _names(raw, names)
    if layers is None:
        flags: dict[str, Any] = {"methods": _strings(methods, "methods", "['msp', 'energy']"), "seeds": _seeds(seed),
                                 "device": device}
        if datasets is not None:
            flags["datasets"] = _strings(datasets, "datasets", "['mnist', 'ood:fashion']")
        layers = [load_profile(profile), flags, _options(options)]
    layers = [*layers, {"backbone": "+".join(model_names)}]
    if data not in DATA_CLASSES:  # the user's own data (datasets/user_data.py): its test part is the ID set
        layers.append({"data": data})
    configs = {n: METHODS.get(n).Config for n in METHODS.names()}
    probe_cfg = resolve(layers, configs)
    if probe_cfg.executor.kind != "local" or probe_cfg.executor.jobs not in (0, 1):
        raise UsageError("models you bring are scored in this process; drop --jobs / --executor")
    from bench.datasets.source import resolve as resolve_source
    from bench.datasets.source import run_sets

    source = resolve_source(probe_cfg)  # the user's --data, else MNIST
    if probe_cfg.datasets:  # an unknown set fails here, before the models run
        evalsets.expand(list(probe_cfg.datasets), run_sets(source, probe_cfg.ood))
    dev = resolve_device(probe_cfg.device)
    adapted: list[UserModel] = []
    try:  # a failed check takes the hooks off the user's modules again
        for m, n in zip(raw, model_names):
            adapted.append(UserModel(m, n, feature_layer))
        probe = source.part("test").images[:PROBE_IMAGES].float().div(255.0).to(dev)
        for a in adapted:
            a.to(dev)
            a.probe(probe, source.num_classes, source.name)
        method_names = expand_methods(list(probe_cfg.methods), adapted)
        check_methods(method_names, adapted)
        if "mcdropout" in method_names:
            for a in adapted:
                if not a.stochastic_tail:
                    warnings.warn(f"mcdropout runs T full passes of model {a.name} (no stochastic tail found): build "
                                  "it as an nn.Sequential, or declare stochastic_tail = True with forward_prefix (the "
                                  "layers before the first dropout) and forward_tail (the rest), to run the prefix "
                                  "once", stacklevel=2)
        layers.append({"methods": method_names})  # wildcards resolved: the run's cells are these methods
        if "ensemble" in method_names:  # one member per model given
            layers.append({"ensemble": {"members": len(raw)}})
        cfg = resolve(layers, configs)
    except BaseException:
        for a in adapted:
            a.close()
        raise
    return cfg, adapted


def run(cfg, adapted: list[UserModel], run_dir: Path, *, resume: bool = False, progress: bool = False,
        console: Console | None = None, command: list[str] | None = None) -> RunOutcome:
    """The runner over already prepared models; the caller holds ``preserved`` around it."""
    runner = UserRunner(cfg, run_dir, adapted, resume=resume, console=console, progress=progress,
                        command=command or [sys.executable, "-c", "bench.evaluate(...)"])
    return runner.run()


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(ROW_FIELDS))


def evaluate(model: nn.Module | Sequence[nn.Module], *, methods: str | Sequence[str] = ("msp",),
             datasets: str | Sequence[str] | None = None, data: str = "mnist", device: str = "auto",
             out: str | Path | None = None, seed: int | Sequence[int] = 0, names: str | Sequence[str] | None = None,
             feature_layer: str | None = None, profile: str = "quick", options: dict[str, Any] | None = None,
             progress: bool = False) -> pd.DataFrame:
    """Score your trained classifier(s) with bench's confidence methods on bench's evaluation sets.

    ``model``: an ``nn.Module`` mapping images in [0, 1], (N, C, H, W), to logits (N, K), or a list of them (several
    models: rows for each; ``methods`` containing ``ensemble``: also one ensemble of them). ``methods``: names or
    wildcards of methods that only read a trained classifier: every registered method whose training is the shared
    or a frozen baseline (``bench.own.evaluate.supports``; the post-hoc scorers and detectors, mcdropout, trust score,
    ConfidNet's head, ensemble). ``datasets``: eval sets as for ``bench run --datasets`` (None: MNIST
    test plus the offline OOD sets). ``data``: "mnist", or your own labelled dataset as "NAME=PATH" (an .npz, IDX
    files IMAGES,LABELS or a folder of class subfolders; docs/your-data.md), whose test part is then the eval set
    NAME and whose training part fits temperature, trust score and ConfidNet's head. ``out``: also keep the run
    directory there (for ``bench report``/``compare``).
    ``feature_layer``: submodule whose output is the penultimate features, for models without timm's
    ``forward_features``/``forward_head``. ``profile``/``options``: as ``bench run --profile``/``--set``
    (e.g. ``{"mcdropout.passes": 10, "eval.max_eval": 1000}``).

    Returns the tidy rows (the columns of results.csv); the models' parameters, modes and devices are left as found.
    """
    raw = list(model) if isinstance(model, (list, tuple)) else [model]
    with preserved([m for m in raw if isinstance(m, nn.Module)]):  # also around the checks: they move and run it
        cfg, adapted = prepare(model, methods=methods, datasets=datasets, data=data, device=device, seed=seed,
                               names=names, feature_layer=feature_layer, profile=profile, options=options)
        with _RunDir(out) as run_dir:
            try:
                outcome = run(cfg, adapted, run_dir, progress=progress)
            finally:
                for a in adapted:
                    a.close()
            rows = outcome.store.rows()
    if outcome.errors:
        from bench.report.outcome import summarize_errors

        raise BenchError(f"{len(outcome.errors)} failed: {summarize_errors(outcome.errors)}")
    return frame(rows)


class _RunDir:
    """``out`` itself, or a temporary run directory removed afterwards (``out=None``)."""

    def __init__(self, out: str | Path | None):
        self.out, self._tmp = out, None

    def __enter__(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-evaluate-")
        return Path(self._tmp.name) / "evaluate"

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


