"""The driver of a run: for each (fold, seed, method) fit or load the method, then score every eval set once.

``Runner`` prepares the run directory (provenance.py), plans the grid's units (grid.py), hands them to
an executor (executors.py: in this process, ``--jobs`` worker processes or Ray workers, each running a
``UnitWorker``, worker.py) and aggregates what they return. Workers write each finished (method, seed, fold,
eval set) cell atomically, plus a record per fitted checkpoint, failure and eval set; only the driver (which holds
the run directory's lock) writes the run-wide files (results.csv, checkpoints.json, errors.json, manifest.json),
derived from those files, so they are right after any interruption. An interrupted run resumes (``--resume``)
without redoing finished cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from torch import nn

from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.datasets import evalsets, user_data
from bench.datasets.benchmarks import run_defaults
from bench.datasets.evalsets import own_ood_sets
from bench.datasets.source import resolve as resolve_source
from bench.datasets.source import run_sets
from bench.errors import UsageError
from bench.methods import METHODS
from bench.plugins import load_plugins
from bench.run.executors import GridJob, Payload, check_executor, make_executor
from bench.run.grid import Unit, UnitResult, check_methods_eval_sets, eval_names, fitted_ok, plan_units, preflight
from bench.run.progress import Bars
from bench.run.provenance import check_one_copy, prepare_store
from bench.run.runlock import RunLock
from bench.run.store import RunStore, cell_key
from bench.run.worker import UnitWorker
from bench.utils import resolve_device


@dataclass
class RunOutcome:
    store: RunStore
    errors: list[dict[str, Any]] = field(default_factory=list)
    cells_done: int = 0
    cells_skipped: int = 0


class Runner:
    """The driver: prepares the run directory, plans the units, hands them to the executor and aggregates what
    they return into the run-wide files."""

    def _preflight_nets(self) -> Callable[[str, Any], list[nn.Module]] | None:
        """The networks whose shape the methods' preflight checks (None: an untrained backbone of the run's)."""
        return None

    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool = False, retrain: bool = False,
                 console: Console | None = None, command: list[str] | None = None, progress: bool = True,
                 tensorboard: bool = False):
        check_one_copy()  # bench run and bench.evaluate: before the run folder, its lock or any data is touched
        self.plugins = load_plugins()
        # the in-distribution data, resolved once (a value every worker gets), and this run's own eval sets
        self.source = resolve_source(cfg)
        self.sets = run_sets(self.source, cfg.ood)
        if cfg.ood and cfg.datasets:  # user OOD sets (ood:NAME) are added to an explicit --datasets list
            cfg = dataclasses.replace(cfg, datasets=tuple(dict.fromkeys((*cfg.datasets, *own_ood_sets(self.sets)))))
        check_executor(cfg)
        self.cfg = cfg
        # Ray workers pick their own device; the driver (maybe a CPU-only head node) only validates other specs
        ray = cfg.executor.kind == "ray"
        self.device = torch.device("cpu") if ray else resolve_device(cfg.device)
        self.methods = METHODS.expand(list(cfg.methods))
        self.datasets = evalsets.expand(list(cfg.datasets), self.sets) if cfg.datasets \
            else run_defaults(cfg.benchmark, self.source, self.sets, cfg.data_dir)
        self.console = console or Console(stderr=True)
        self.show_progress = progress
        self.tensorboard = tensorboard
        if tensorboard:
            _check_tensorboard()
        from bench.run.validate import check_run

        check_run(cfg, self.datasets, self.sets)  # the run's values first, then what methods check on the network
        user_data.check_run(cfg, self.datasets, self.methods, self.source, self.sets)  # --data: sets, methods, split
        check_methods_eval_sets(cfg, self.methods, self.datasets)
        self.hyperparameters = preflight(cfg, self.methods, self.source, self._preflight_nets())  # before training
        self.lock = RunLock(run_dir)
        if resume:  # --resume only on the data the run was made with (content hash)
            user_data.check_resume(RunStore(run_dir).read_manifest(), self.source, run_dir)
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
        manifest = self.store.read_manifest() or {}
        manifest["hyperparameters"] = self.hyperparameters  # every method's, defaults included
        # what --methods's wildcards matched when the run started: reports expect these cells, not those of methods
        # registered later
        manifest["resolved_methods"] = list(self.methods)
        if self.source.is_user_data:
            manifest["data"] = user_data.manifest_entry(self.source.spec)  # its content hash: no mixing of datasets
        self.store.write_manifest(manifest)
        self.cell_names: dict[str, str] = {}  # cell key -> readable name, every cell of the grid

    def run(self) -> RunOutcome:
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> RunOutcome:
        out = RunOutcome(self.store)
        self.store.remove_temporary_files()
        for bad in self.store.set_aside_corrupt_cells():
            self.console.print(f"warning: {bad} is corrupt; renamed to {bad.name}.corrupt, the cell is recomputed",
                               highlight=False, soft_wrap=True, markup=False)
        self.store.rebuild_indices()  # repairs the indices of an interrupted run before anything else
        with Bars(self.console, enabled=self.show_progress) as bars:
            local = self.make_worker(bars)
            self._merge_groups(local.build_static())
            units = []
            for unit in self.plan():
                keys = self.unit_keys(unit)
                self.cell_names.update(zip(keys, self.unit_cells(unit)))
                left = sum(not self.store.done(k) for k in keys)
                out.cells_skipped += len(keys) - left
                refit = self.cfg.executor.refit and not all(fitted_ok(self.store, self.cache, m, unit.seed, unit.fold)
                                                            for m in unit.methods)
                if left or refit:
                    units.append(unit)
            total = len(self.cell_names)
            executor = self.make_executor(len(units))
            try:
                executor.run(units, local, bars, total, out.cells_skipped, lambda r: self._collect(out, r))
            finally:
                self.store.rebuild_indices()
                with contextlib.suppress(OSError):  # empty unless units are still in flight elsewhere
                    (self.store.dir / ".running").rmdir()
        return out

    def job(self) -> GridJob:
        """The run as the executor sees it (plain values; the workers' part is picklable)."""
        payload = Payload(self.cfg, str(self.store.dir.resolve()), self.cache, tuple(self.datasets),
                          tuple(self.plugins), self.tensorboard, self.source)
        return GridJob(payload, self.device, self.console, dict(self.cell_names))

    def plan(self) -> list[Unit]:
        return plan_units(self.cfg, self.methods)

    def make_executor(self, n_units: int):
        """Where the units run (``--executor`` / ``--jobs``; a run of user models overrides it)."""
        return make_executor(self.job(), n_units)

    def make_worker(self, bars: Bars) -> UnitWorker:
        """The in-process worker (a run of user models makes its own, bench/own/evaluate.py)."""
        return UnitWorker(self.cfg, self.store.dir, self.cache, self.device, self.datasets, source=self.source,
                          bars=bars, tensorboard=self.tensorboard)

    def unit_cells(self, unit: Unit) -> list[str]:
        """Readable names of a unit's cells, in ``unit_keys`` order (the one-line-per-cell log)."""
        names = eval_names(self.datasets, self.cfg.eval.conformal)
        return [f"{m} seed {unit.seed} fold {unit.fold} {ds}" for m in unit.methods for ds in names]

    def unit_keys(self, unit: Unit) -> list[str]:
        names = eval_names(self.datasets, self.cfg.eval.conformal)
        return [cell_key(m, unit.seed, unit.fold, ds) for m in unit.methods for ds in names]

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
