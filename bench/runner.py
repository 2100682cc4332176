"""The benchmark grid: for each (fold, seed, method) fit or load the method, then score every eval set once.

The grid is cut into *units* (``plan_units``): the methods that share one trained baseline network (``msp``,
``mcdropout`` and the post-hoc scorers) form one unit per (fold, seed), so their logits and attacked eval sets are
computed once; every other method is a unit of its own. A ``UnitWorker`` runs units (in this process, in
``--jobs`` worker processes or on Ray workers, see bench/executors.py) and writes each finished (method, seed,
fold, eval set) cell atomically, plus a record per fitted checkpoint, failure and eval set; only the driver
(``Runner``, which holds the run directory's lock) writes the run-wide files (results.csv, checkpoints.json,
errors.json, manifest.json), derived from those files, so they are right after any interruption. An interrupted run resumes
(``--resume``) without redoing finished cells. One failing method becomes an error entry, not a dead sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from torch import nn

from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext, EvalData
from bench.datasets.idx import read_idx
from bench.datasets.mnist import DATA_ROOT, FILES, load_embedded
from bench.datasets.splits import SplitSpec, smallest_train_size, split
from bench.errors import BenchError, UsageError
from bench import faults
from bench.rows import cost_rows, inference_ms_per_1k, metric_rows, tidy
from bench.executors import check_executor
from bench.methods import METHODS
from bench.methods.backbones import create_backbone
from bench.methods.base import ConfidenceMethod, FitContext, Prediction, Training
from bench.plugins import load_plugins
from bench.progress import Bars
from bench.runlock import RunLock
from bench.store import RunStore, cell_key
from bench.utils import device_name, resolve_device, to_jsonable

PACKAGES = ("torch", "torchvision", "timm", "torchattacks", "numpy", "scikit-learn", "pandas", "rich", "pyyaml")
COST_SET = "cost"


@dataclass
class RunOutcome:
    store: RunStore
    errors: list[dict[str, Any]] = field(default_factory=list)
    cells_done: int = 0
    cells_skipped: int = 0


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_sha() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                           text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "") if r.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that determine results (not where they run or are cached)."""
    return {k: v for k, v in cfg.items() if k not in ("device", "data_dir", "cache_dir", "executor")}


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = _diff(va, vb, f"{prefix}{k}.")
            if d:
                return d
        elif va != vb:
            return f"{prefix}{k}: {va!r} in the run, {vb!r} now"
    return ""


def prepare_store(cfg: RunConfig, run_dir: Path, resume: bool, command: list[str], device: torch.device,
                  device_label: str | None = None) -> RunStore:
    store = RunStore(run_dir)
    foreign = store.foreign_entry()
    if foreign is not None:
        raise UsageError(f"--out {run_dir} is a folder that is not a bench run (it holds {foreign}); bench will not "
                         "write over it: choose a new or empty folder")
    resolved = to_jsonable(cfg)
    resolved["method_options"] = {m: dict(o) for m, o in cfg.method_options}
    old = store.read_manifest()
    if store.has_results() and not resume:
        raise UsageError(f"{run_dir} already holds results; continue it with --resume or choose another --out")
    if resume and old is not None and comparable(old["config"]) != comparable(resolved):
        diff = _diff(comparable(old["config"]), comparable(resolved))
        raise UsageError(f"cannot resume {run_dir} with a different config ({diff}); "
                         "drop --resume and choose another --out")
    store.ensure_writable()
    store.write_manifest({
        "run_id": store.run_id, "config": resolved, "command": command, "versions": versions(),
        "git_sha": git_sha(), "device": device_label or str(device),
        "device_name": device_label or device_name(device),
        "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "resumed": bool(resume and old is not None),
        "eval_set_groups": (old or {}).get("eval_set_groups", {}),  # filled as units build sets
    })
    return store


@dataclass(frozen=True)
class Unit:
    """One schedulable piece of the grid: ``methods`` fitted and evaluated for one (fold, seed)."""

    fold: int
    seed: int
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{'+'.join(self.methods)} seed {self.seed} fold {self.fold}"

    @property
    def marker(self) -> str:
        """File name prefix of the unit's in-flight marker in ``<run>/.running`` (progress of remote workers)."""
        return f"fold{self.fold}__seed{self.seed}__{'+'.join(self.methods)}"


@dataclass
class UnitResult:
    """What a unit hands back to the driver (its cells are already on disk)."""

    unit: Unit
    cells_done: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[tuple[str, int, int, str, str]] = field(default_factory=list)  # method, seed, fold, key, path
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval set -> shift family, group, severity


def shares_baseline(cls: type[ConfidenceMethod]) -> bool:
    """Methods whose network is the plain cached baseline: post-hoc scorers and those that keep the default
    ``_fit`` (msp, mcdropout, energy, maxlogit, entropy, temperature)."""
    return cls.training is Training.SHARED_BASELINE


def plan_units(cfg: RunConfig, methods: list[str]) -> list[Unit]:
    """The grid's units, in run order: per fold and seed, the baseline-sharing methods together (one unit per
    backbone they use) and each other method alone, in the order of ``methods``."""
    units: list[Unit] = []
    for fold in range(cfg.folds):
        for seed in cfg.seeds:
            groups: dict[str, list[str]] = {}
            for m in methods:
                cls = METHODS.get(m)
                if shares_baseline(cls):
                    backbone = getattr(cls.Config(**cfg.options_for(m)), "backbone", "") or cfg.backbone
                    groups.setdefault(f"baseline:{backbone}", []).append(m)
                else:
                    groups[m] = [m]
            units.extend(Unit(fold, seed, tuple(ms)) for ms in groups.values())
    return units


def preflight(cfg: RunConfig, methods: list[str], nets: Callable[[str, Any], list[nn.Module]] | None = None
              ) -> dict[str, dict[str, Any]]:
    """Each method's checks that need its network or the training-split size (k-NN's k, a backbone without
    penultimate features), run before any training; returns the hyper-parameters each method will use.
    ``nets(method, config)`` gives the networks to check (default: an untrained backbone of the run's)."""
    n_all = len(read_idx(DATA_ROOT / FILES["mnist"]["train_labels"][0]))  # the labels file only: fast
    n_train = smallest_train_size(n_all, cfg.folds, cfg.split.val_fraction, cfg.split.max_train)
    out = {}
    for m in methods:
        cls = METHODS.get(m)
        config = cls.Config(**cfg.options_for(m))
        for net in (nets or _untrained_backbone(cfg))(m, config):
            out[m] = to_jsonable(cls.preflight(config, net, n_train))
    return out


def _untrained_backbone(cfg: RunConfig) -> Callable[[str, Any], list[nn.Module]]:
    return lambda method, config: [create_backbone(getattr(config, "backbone", "") or cfg.backbone, 10)]
    return out


def eval_names(datasets: list[str]) -> list[str]:
    return [*datasets, COST_SET]


def fitted_ok(store: RunStore, cache: CheckpointCache, method: str, seed: int, fold: int) -> bool:
    """The run records a checkpoint for (method, seed, fold) and the cache still holds it (else ``--resume``
    fits it again, from the cache when it can, so that predict, serve and dadc find it)."""
    entry = store.fitted_entry(method, seed, fold)
    return entry is not None and cache.path(str(entry.get("key"))).exists()


class UnitWorker:
    """Runs units of one run: fits (or loads) each method and scores its eval sets, writing cells. Keeps the
    static eval sets between units; logits and model-dependent sets (attacks) live for one unit."""

    def __init__(self, cfg: RunConfig, run_dir: Path, cache: CheckpointCache, device: torch.device,
                 datasets: list[str], *, bars: Bars | None = None, tensorboard: bool = False,
                 on_cell: Any = None):
        self.cfg = cfg
        self.device = device
        self.datasets = datasets
        self.store = RunStore(run_dir)
        self.cache = cache
        self.bars = bars if bars is not None else Bars(Console(stderr=True), enabled=False)
        self.tensorboard = tensorboard
        self.on_cell = on_cell  # called after each finished cell (the in-process progress bar)
        self.eval_ctx = EvalContext(data_dir=Path(cfg.data_dir), max_eval=cfg.eval.max_eval, device=device,
                                    cache_dir=Path(cfg.cache_dir))
        self._eval_data: dict[tuple[str, str], EvalData] = {}
        self._logits: dict[tuple[str, str], torch.Tensor] = {}
        self._features: dict[tuple[str, str], torch.Tensor] = {}  # penultimate features, when a scorer reads them
        self._unit_features = False  # whether the current unit has a feature scorer
        self._groups: dict[str, dict[str, Any]] = {}
        self._train_full = None

    def eval_data(self, name: str, method: ConfidenceMethod | None = None, method_key: str = "") -> EvalData:
        """Each eval set is built once per process; model-dependent ones (attacks) once per fitted method."""
        model_dependent = evalsets.needs_model(name)
        key = (name, method_key if model_dependent else "")
        if key not in self._eval_data:
            if model_dependent and method is None:
                raise AssertionError(f"eval set {name} needs a fitted method")
            d = evalsets.build(name, self.eval_ctx, method) if model_dependent else evalsets.build(name, self.eval_ctx)
            self._eval_data[key] = dataclasses.replace(d, images=d.images.to(self.device))
            # shift family, OOD group and severity of each eval set, for the manifest (reports)
            self._groups[d.name] = {"kind": d.kind, "shift": d.shift, "group": d.group, "severity": d.severity}
            self.store.record_eval_set(d.name, self._groups[d.name])
        return self._eval_data[key]

    def build_static(self) -> dict[str, dict[str, Any]]:
        """Build the sets that need no model up front (a missing one fails before any training)."""
        for name in ["mnist", *self.datasets]:
            if not evalsets.needs_model(name):
                self.eval_data(name)
        return dict(self._groups)

    def run_unit(self, unit: Unit) -> UnitResult:
        out = UnitResult(unit)
        if self._train_full is None:
            self._train_full = load_embedded("mnist", "train")
        spec = SplitSpec(self.cfg.split.val_fraction, self.cfg.split.split_seed, self.cfg.folds, unit.fold,
                         self.cfg.split.max_train)
        marker = self.store.dir / ".running" / f"{unit.marker}.{os.getpid()}"
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        # with a feature scorer in the unit, the one shared pass per eval set yields features and logits together
        self._unit_features = any(METHODS.get(m).uses_features for m in unit.methods)
        try:
            for method in unit.methods:
                self._run_method(out, spec, method, unit.seed)
        finally:  # what belongs to this unit's models is not needed by the next unit
            self._logits.clear()
            self._features.clear()
            self._eval_data = {k: v for k, v in self._eval_data.items() if not k[1]}
            out.groups = dict(self._groups)
            marker.unlink(missing_ok=True)
        return out

    def _run_method(self, out: UnitResult, spec: SplitSpec, method: str, seed: int) -> None:
        keys = {ds: self.cell_key(method, seed, spec.fold, ds) for ds in eval_names(self.datasets)}
        todo = [ds for ds, k in keys.items() if not self.store.done(k)]  # a retried unit keeps finished cells
        if not todo and fitted_ok(self.store, self.cache, method, seed, spec.fold):
            self.store.clear_failure(method, seed, spec.fold)
            return
        try:
            m, method_key = self._fit(spec, method, seed)
            # Post-hoc scorers share the baseline's network: attacks on it and its logits are computed once.
            model_key = m.baseline_key if (m.posthoc and m.baseline_key) else method_key
            entry = (method, seed, spec.fold, method_key, str(self.cache.path(method_key).resolve()))
            out.checkpoints.append(entry)
            self.store.record_fitted(*entry)  # before any cell: a cell on disk always has its checkpoint recorded
            # m.backbone: the network the method really used (a method's config may override the run's)
            base = {"run_id": self.store.run_id, "method": method, "backbone": m.backbone, "seed": seed,
                    "fold": spec.fold}
            id_pred: Prediction | None = None
            task = self.bars.add(f"eval {method} seed {seed}", total=len(todo))
            try:
                for ds in todo:
                    faults.hit("eval")
                    if ds == COST_SET:
                        self._score_cost(m, keys[ds], base)
                    else:
                        id_pred = self._score(m, model_key, ds, keys[ds], base, id_pred)
                    out.cells_done += 1
                    self.bars.advance(task)
                    if self.on_cell is not None:
                        self.on_cell()
            finally:
                self.bars.remove(task)
            self.store.clear_failure(method, seed, spec.fold)
        except BenchError as e:
            out.errors.append({"method": method, "seed": seed, "fold": spec.fold, "error": str(e)})
            self.store.record_failure(out.errors[-1])
        except Exception as e:  # a crash in one method must not take down the other cells of the grid
            out.errors.append({"method": method, "seed": seed, "fold": spec.fold,
                               "error": f"{type(e).__name__}: {e}".splitlines()[0],
                               "traceback": traceback.format_exc()})
            self.store.record_failure(out.errors[-1])

    def cell_key(self, method: str, seed: int, fold: int, eval_set: str) -> str:
        """The cell's file name (a worker of user models adds the model's name, bench/user_run.py)."""
        return cell_key(method, seed, fold, eval_set)

    def _score(self, m: ConfidenceMethod, model_key: str, ds: str, key: str, base: dict[str, Any],
               id_pred: Prediction | None) -> Prediction | None:
        """Predict on one eval set, write its metric rows and predictions; returns the MNIST test predictions
        (needed by OOD sets), computing them if this set needs them first."""
        data = self.eval_data(ds, m, model_key)
        pred = self._predict(m, model_key, ds, data)
        if ds == "mnist":
            id_pred = pred
        elif data.kind != "id" and id_pred is None:
            id_pred = self._predict(m, model_key, "mnist", self.eval_data("mnist"))
        rows = tidy({**metric_rows(data, pred, id_pred), **data.extra},  # extra: e.g. UAP fooling rate
                    {**base, "eval_set": ds, "shift": data.shift, "severity": data.severity})
        arrays = {"probs": pred.probs.numpy(), "confidence": pred.confidence.numpy(),
                  "labels": data.labels.cpu().numpy()}
        self.store.write_cell(key, rows, arrays)
        return id_pred

    def _score_cost(self, m: ConfidenceMethod, key: str, base: dict[str, Any]) -> None:
        imgs = self.eval_data("mnist").images[: self.cfg.eval.cost_images]
        ms = inference_ms_per_1k(m, imgs, self.cfg.eval.batch_size)
        self.store.write_cell(key, tidy(cost_rows(m, ms), {**base, "eval_set": COST_SET, "shift": "cost",
                                                            "severity": ""}))

    def _predict(self, m: ConfidenceMethod, model_key: str, name: str, data: EvalData) -> Prediction:
        if not m.posthoc:
            return m.predict(data.images, batch_size=self.cfg.eval.batch_size)
        key = (model_key, name)
        if key not in self._logits:
            if self._unit_features:
                self._features[key], self._logits[key] = m.features(data.images, batch_size=self.cfg.eval.batch_size)
            else:
                self._logits[key] = m.logits(data.images, batch_size=self.cfg.eval.batch_size)
        if m.uses_features:
            return m.predict_from_features(self._features[key], self._logits[key])
        return m.predict_from_logits(self._logits[key])

    def _fit(self, spec: SplitSpec, method: str, seed: int) -> tuple[ConfidenceMethod, str]:
        """The fitted method and its cache key (checkpoint cache hit, or fit and store)."""
        config = METHODS.get(method).Config(**self.cfg.options_for(method))
        writer = self._writer(method, seed, spec.fold) if self.tensorboard else None
        ctx = FitContext(device=self.device, recipe=self.cfg.train, split_id=spec.split_id, cache=self.cache,
                         progress=self.bars, on_epoch=_scalar_logger(writer) if writer else None)
        try:
            m = ctx.fit_method(method, self.cfg.backbone, 10, seed, *split(self._train_full, spec), config=config)
        finally:
            if writer is not None:
                writer.close()
        return m, m.cache_key(ctx)

    def _writer(self, method: str, seed: int, fold: int):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.store.dir / "tensorboard" / f"{method}_seed{seed}_fold{fold}"))


class Runner:
    """The driver: prepares the run directory, plans the units, hands them to the executor and aggregates what
    they return into the run-wide files."""

    def _preflight_nets(self) -> Callable[[str, Any], list[nn.Module]] | None:
        """The networks whose shape the methods' preflight checks (None: an untrained backbone of the run's)."""
        return None

    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool = False, retrain: bool = False,
                 console: Console | None = None, command: list[str] | None = None, progress: bool = True,
                 tensorboard: bool = False):
        self.plugins = load_plugins()
        if cfg.ood:  # user OOD sets: registered as ood:NAME, added to an explicit --datasets list
            from bench.datasets.user_ood import register

            names = register(cfg.ood)
            if cfg.datasets:
                cfg = dataclasses.replace(cfg, datasets=tuple(dict.fromkeys((*cfg.datasets, *names))))
        check_executor(cfg)
        self.cfg = cfg
        # Ray workers pick their own device; the driver (maybe a CPU-only head node) only validates other specs
        ray = cfg.executor.kind == "ray"
        self.device = torch.device("cpu") if ray else resolve_device(cfg.device)
        self.methods = METHODS.expand(list(cfg.methods))
        self.datasets = evalsets.expand(list(cfg.datasets)) if cfg.datasets else evalsets.offline_sets()
        self.console = console or Console(stderr=True)
        self.retrain = retrain
        self.show_progress = progress
        self.tensorboard = tensorboard
        if tensorboard:
            _check_tensorboard()
        from bench.validate import check_run

        check_run(cfg, self.datasets)  # the run's values first, then what the methods check against the network
        self.hyperparameters = preflight(cfg, self.methods, self._preflight_nets())  # one-line errors, before training
        self.lock = RunLock(run_dir)
        if RunStore(run_dir).foreign_entry() is None:  # else prepare_store refuses, before writing anything
            self.lock.acquire()  # released at the end of run(), or by the kernel if this process dies
        try:
            self.store = prepare_store(cfg, run_dir, resume, command or sys.argv, self.device,
                                       device_label=f"{cfg.device} (per Ray worker)" if ray else None)
        except BaseException:
            self.lock.release()
            raise
        # --retrain ignores checkpoints from earlier runs, but not those this run writes (so msp and mcdropout
        # still share one freshly trained baseline), in this process or in any worker.
        self.cache = CheckpointCache(cfg.cache_dir, ignore_existing=retrain)
        self.grid_keys: set[str] = set()
        manifest = self.store.read_manifest() or {}
        manifest["hyperparameters"] = self.hyperparameters  # every method's, defaults included
        self.store.write_manifest(manifest)
        self.cell_names: dict[str, str] = {}

    def run(self) -> RunOutcome:
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> RunOutcome:
        from bench.executors import make_executor

        out = RunOutcome(self.store)
        self.store.remove_temporary_files()
        for bad in self.store.set_aside_corrupt_cells():
            self.console.print(f"warning: {bad} is corrupt; renamed to {bad.name}.corrupt, the cell is recomputed",
                               highlight=False, soft_wrap=True, markup=False)
        self.store.rebuild_indices()  # repairs the indices of an interrupted run before anything else
        executor = make_executor(self)
        with Bars(self.console, enabled=self.show_progress) as bars:
            local = self.make_worker(bars)
            self._merge_groups(local.build_static())
            units = []
            for unit in self.plan():
                keys = self.unit_keys(unit)
                self.grid_keys.update(keys)
                self.cell_names.update(zip(keys, self.unit_cells(unit)))
                left = sum(not self.store.done(k) for k in keys)
                out.cells_skipped += len(keys) - left
                if left or not all(fitted_ok(self.store, self.cache, m, unit.seed, unit.fold) for m in unit.methods):
                    units.append(unit)
            total = len(self.grid_keys)
            try:
                executor.run(units, local, bars, total, out.cells_skipped, lambda r: self._collect(out, r))
            finally:
                self.store.rebuild_indices()
                with contextlib.suppress(OSError):  # empty unless units are still in flight elsewhere
                    (self.store.dir / ".running").rmdir()
        return out

    def plan(self) -> list[Unit]:
        return plan_units(self.cfg, self.methods)

    def make_worker(self, bars: Bars) -> UnitWorker:
        """The in-process worker (a run of user models makes its own, bench/user_run.py)."""
        return UnitWorker(self.cfg, self.store.dir, self.cache, self.device, self.datasets, bars=bars,
                          tensorboard=self.tensorboard)

    def unit_cells(self, unit: Unit) -> list[str]:
        """Readable names of a unit's cells, in ``unit_keys`` order (the one-line-per-cell log)."""
        return [f"{m} seed {unit.seed} fold {unit.fold} {ds}" for m in unit.methods for ds in eval_names(self.datasets)]

    def unit_keys(self, unit: Unit) -> list[str]:
        return [cell_key(m, unit.seed, unit.fold, ds) for m in unit.methods for ds in eval_names(self.datasets)]

    def _collect(self, out: RunOutcome, result: UnitResult) -> None:
        """The driver's side of a finished unit: the only writer of the run-wide files."""
        out.cells_done += result.cells_done
        for stale in (self.store.dir / ".running").glob(f"{result.unit.marker}.*"):  # left by a dead worker
            stale.unlink(missing_ok=True)
        for e in result.errors:
            out.errors.append(e)
            self.store.record_failure(e)  # workers record their own; a dead worker's unit is recorded here
            self.console.print(f"[red]error[/red] {e['method']} seed {e['seed']} fold {e['fold']}: {e['error']}",
                               soft_wrap=True, highlight=False)
        for entry in result.checkpoints:
            self.store.record_fitted(*entry)
        self._merge_groups(result.groups)
        self.store.rebuild_indices()

    def _merge_groups(self, groups: dict[str, dict[str, Any]]) -> None:
        """Shift family, OOD group and severity of each eval set, in the manifest, for reports."""
        manifest = self.store.read_manifest() or {}
        known = manifest.setdefault("eval_set_groups", {})
        if any(known.get(k) != v for k, v in groups.items()):
            known.update(groups)
            self.store.write_manifest(manifest)


def _check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'") from None


def _scalar_logger(writer):
    """Per-epoch scalars, flushed at once so TensorBoard shows them live."""

    def log(label: str, epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            writer.add_scalar(f"{label}/{name}", value, epoch)
        writer.flush()

    return log


def summarize_errors(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['method']} seed {e['seed']}: {e['error']}" for e in errors)

