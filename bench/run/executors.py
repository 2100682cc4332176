"""Executors: where the units of a grid run (docs/scale-out.md).

- ``local``, ``--jobs auto`` (default): ``auto_jobs`` picks the number of worker processes below (1 = in this
  process).
- ``local``, ``--jobs 1``: one after the other, in this process (training bars shown as they run).
- ``local``, ``--jobs N``: N worker processes (spawn), each a single-process pool of its own, so that a worker
  that dies is known exactly: its unit is retried once in a fresh process, then reported as error rows. With
  several GPUs, worker i uses ``cuda:(i mod #GPUs)``; on CPU each worker gets ``cores // N`` torch threads.
- ``ray``: one Ray task per unit with ``executor.cpus_per_unit`` / ``executor.gpus_per_unit`` resources and
  ``executor.max_retries`` retries of a dead worker, on a local Ray instance or the cluster at ``--ray-address``.

All of them run the same ``UnitWorker.run_unit`` on the same units; cells are written by the workers, the
run-wide files by the driver (``Runner._collect``), so the results store is the same whichever ran the grid. An
executor knows the run only through a ``GridJob``, a plain value the driver makes (it never sees the ``Runner``).
"""

from __future__ import annotations

import collections
import math
import multiprocessing
import os
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.errors import UsageError
from bench.run.grid import Unit, UnitResult, failed_result, heaviest_first
from bench.run.progress import Bars
from bench.run.worker import UnitWorker

RAY_INSTALL = "--executor ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install 'ray>=2.9')"
POLL_S = 0.5


# --- the worker side (runs in worker processes; also imported by Ray workers) -------------------------------------
@dataclass(frozen=True)
class Payload:
    """Everything a worker process needs to build its ``UnitWorker`` (picklable)."""

    cfg: RunConfig
    run_dir: str  # resolved
    cache: CheckpointCache
    datasets: tuple[str, ...]
    plugins: tuple[str, ...]
    tensorboard: bool
    source: Any  # the run's DataSource (datasets/source.py): a small value; workers load its images


@dataclass(frozen=True)
class GridJob:
    """What an executor needs from the driver: the workers' payload, the driver's device and console, and the
    readable name of every cell of the grid by cell key (the progress bar and its one-line-per-cell log)."""

    payload: Payload
    device: torch.device
    console: Console
    cell_names: dict[str, str]

    @property
    def cfg(self) -> RunConfig:
        return self.payload.cfg

    @property
    def run_dir(self) -> Path:
        return Path(self.payload.run_dir)


_WORKERS: dict[tuple[str, str], UnitWorker] = {}


def _unit_worker(payload: Payload, device: str, threads: int) -> UnitWorker:
    """This process's worker for a run (kept between units of the same run: static eval sets are built once)."""
    key = (payload.run_dir, device)
    if key not in _WORKERS:
        from bench.plugins import load_plugins
        from bench.utils import resolve_device

        load_plugins(list(payload.plugins))
        torch.set_num_threads(max(1, threads))
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is not None:  # --jobs on several GPUs: this worker's GPU
            torch.cuda.set_device(dev)
        _WORKERS.clear()  # one run at a time per process
        _WORKERS[key] = UnitWorker(payload.cfg, Path(payload.run_dir), payload.cache, dev, list(payload.datasets),
                                   source=payload.source, tensorboard=payload.tensorboard)
    return _WORKERS[key]


_POOL_ARGS: tuple[Payload, str, int] | None = None


def _pool_init(payload: Payload, device: str, threads: int) -> None:
    global _POOL_ARGS
    _POOL_ARGS = (payload, device, threads)


def _pool_run_unit(unit: Unit) -> UnitResult:
    assert _POOL_ARGS is not None
    return _unit_worker(*_POOL_ARGS).run_unit(unit)


def _ray_run_unit(payload: Payload, device: str, threads: int, unit: Unit) -> UnitResult:
    return _unit_worker(payload, device, threads).run_unit(unit)


def _ray_check_paths(paths: list[str], token: str) -> str:
    """On one node: '' if every run path holds the driver's token file, else which path is not visible."""
    import socket

    for p in paths:
        if not (Path(p) / f".visible-{token}").exists():
            return f"{p} is not visible from node {socket.gethostname()}"
    return ""


# --- the driver side ---------------------------------------------------------------------------------------------
class GridProgress:
    """One bar for the whole grid: cells done (including resumed ones) of all cells, units running, failures,
    elapsed time. In-process units report each cell; other executors are polled from the cells directory."""

    def __init__(self, bars: Bars, job: GridJob, total: int, skipped: int):
        self.bars, self.job = bars, job
        self.keys = set(job.cell_names)
        self.done, self.running, self.failed, self.retries = skipped, 0, 0, 0
        self.total = total
        self.task = bars.add(self._label(), total=total)
        bars.update(self.task, completed=skipped)
        # Bars cannot draw into a log file or pipe: there, one line per finished cell instead of ten silent minutes
        self.log_lines = not job.console.is_terminal
        self.seen = self._finished() if self.log_lines else set()
        self.t0 = time.perf_counter()

    def _label(self) -> str:
        extra = f", {self.retries} retried" if self.retries else ""
        return f"grid: {self.running} running, {self.failed} failed{extra}"

    def cell(self) -> None:
        self.done += 1
        self.bars.update(self.task, completed=self.done)
        self._log_new()

    def _finished(self) -> set[str]:
        try:
            return {n[:-5] for n in os.listdir(self.job.run_dir / "cells") if n.endswith(".json")} & self.keys
        except OSError:
            return set()

    def _log_new(self, names: set[str] | None = None) -> None:
        if not self.log_lines:
            return
        names = self._finished() if names is None else names
        for key in sorted(names - self.seen):
            self.job.console.print(f"cell {len(self.seen) + 1}/{self.total} done: "
                                   f"{self.job.cell_names.get(key, key)} "
                                      f"({time.perf_counter() - self.t0:.0f} s)",
                                   highlight=False, soft_wrap=True, markup=False)
            self.seen.add(key)

    def poll(self) -> None:
        names = self._finished()
        self.done = len(names)
        self.bars.update(self.task, completed=self.done, label=self._label())
        self._log_new(names)

    def set(self, running: int | None = None, failed: int = 0, retried: int = 0) -> None:
        if running is not None:
            self.running = running
        self.failed += failed
        self.retries += retried
        self.bars.update(self.task, label=self._label())


Collect = Callable[[UnitResult], None]


class Sequential:
    """Units one after the other in the driver's process (the default)."""

    def __init__(self, job: GridJob):
        self.job = job

    def run(self, units: list[Unit], local: UnitWorker, bars: Bars, total: int, skipped: int,
            collect: Collect) -> None:
        progress = GridProgress(bars, self.job, total, skipped)
        local.on_cell = progress.cell
        for unit in units:
            progress.set(running=1)
            result = local.run_unit(unit)
            progress.set(running=0, failed=len(result.errors))
            collect(result)


class LocalPool:
    """``--jobs N``: N single-process pools (spawn). A dead worker breaks only its own pool, so the unit it ran is
    known: it is retried (``executor.max_retries`` times) in a fresh process, then reported as error rows."""

    def __init__(self, job: GridJob, jobs: int):
        self.job, self.jobs = job, jobs
        self.payload = job.payload
        dev = job.device
        n_gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
        if dev.type == "cuda" and dev.index is None and job.cfg.device in ("auto", "cuda") and n_gpus > 1:
            self.devices = [f"cuda:{i % n_gpus}" for i in range(jobs)]
        else:
            self.devices = [str(dev)] * jobs
        cpus = job.cfg.executor.cpus_per_unit
        self.threads = max(1, int(cpus) if cpus else (os.cpu_count() or 1) // jobs)

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_init,
                                   initargs=(self.payload, self.devices[slot], self.threads))

    def run(self, units: list[Unit], local: UnitWorker, bars: Bars, total: int, skipped: int,
            collect: Collect) -> None:
        if units:
            flag = self.job.cfg.executor.jobs or "auto"
            self.job.console.print(f"{len(units)} units in {self.jobs} worker processes, {self.threads} torch "
                                   f"thread{'s' if self.threads > 1 else ''} each (--jobs {flag})",
                                   highlight=False, soft_wrap=True)
        progress = GridProgress(bars, self.job, total, skipped)
        queue = collections.deque(heaviest_first(units))
        attempts: collections.Counter = collections.Counter()
        pools: list[ProcessPoolExecutor | None] = [None] * self.jobs
        running: dict[Future, tuple[int, Unit]] = {}
        try:
            while queue or running:
                busy = {slot for slot, _ in running.values()}
                for slot in range(self.jobs):
                    if slot not in busy and queue:
                        unit = queue.popleft()
                        if pools[slot] is None:
                            pools[slot] = self._pool(slot)
                        running[pools[slot].submit(_pool_run_unit, unit)] = (slot, unit)
                progress.set(running=len(running))
                done, _ = wait(list(running), timeout=POLL_S, return_when=FIRST_COMPLETED)
                progress.poll()
                for fut in done:
                    slot, unit = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        pools[slot].shutdown(wait=False)
                        pools[slot] = None
                        attempts[unit] += 1
                        if attempts[unit] <= self.job.cfg.executor.max_retries:
                            self.job.console.print(f"worker died running {unit.name}; retrying it",
                                                   highlight=False, soft_wrap=True)
                            progress.set(retried=1)
                            queue.appendleft(unit)
                            continue
                        result = failed_result(unit, f"its worker process died ({attempts[unit]} attempts)")
                    except Exception as e:  # the unit crashed outside a method (its methods report their own)
                        result = failed_result(unit, f"{type(e).__name__}: {e}".splitlines()[0])
                    progress.set(failed=len(result.errors))
                    collect(result)
        finally:
            for pool in pools:
                if pool is not None:
                    if running:  # interrupted: do not wait for units in flight
                        for proc in list(getattr(pool, "_processes", {}).values()):
                            proc.terminate()
                    pool.shutdown(wait=not running, cancel_futures=True)


class RayExecutor:
    """One Ray task per unit (see docs/scale-out.md for a cluster: shared run and cache paths, same install)."""

    def __init__(self, job: GridJob):
        self.job = job
        self.ray = import_ray()

    def _resources(self) -> tuple[float, float, str]:
        ray, ex, spec = self.ray, self.job.cfg.executor, self.job.cfg.device
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        if spec.startswith("cuda") and not cluster_gpus:
            raise UsageError(f"--device {spec}: the Ray cluster has no GPU; use --device auto or cpu")
        if spec.startswith("cuda:"):
            raise UsageError(f"--device {spec}: Ray assigns GPUs to units; use --device cuda (or auto)")
        gpus = ex.gpus_per_unit if (spec != "cpu" and cluster_gpus) else 0.0
        return ex.cpus_per_unit or 1.0, gpus, ("cuda" if gpus else "cpu")

    def _check_visible(self, paths: list[str]) -> None:
        """Every alive node must see the run directory and the cache (a shared filesystem): a token file
        written here is looked for by a zero-CPU task pinned to each node."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        for p in paths:
            Path(p).mkdir(parents=True, exist_ok=True)
            (Path(p) / f".visible-{token}").write_text("ok")
        try:
            check = ray.remote(num_cpus=0)(_ray_check_paths)
            refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(paths, token) for n in ray.nodes() if n.get("Alive")]
            problems = [msg for msg in ray.get(refs, timeout=300) if msg]
        finally:
            for p in paths:
                (Path(p) / f".visible-{token}").unlink(missing_ok=True)
        if problems:
            raise UsageError(f"{problems[0]}: --out and --cache-dir must be on a filesystem every Ray node mounts "
                             "at the same path (see docs/scale-out.md)")

    def run(self, units: list[Unit], local: UnitWorker, bars: Bars, total: int, skipped: int,
            collect: Collect) -> None:
        ray, job = self.ray, self.job
        ex = job.cfg.executor
        started = False
        if not ray.is_initialized():
            ray.init(address=ex.address or None, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=True)
            started = True
        refs: dict[Any, Unit] = {}
        try:
            cpus, gpus, device = self._resources()
            self._check_visible([job.payload.run_dir, str(Path(job.cfg.cache_dir).resolve())])
            progress = GridProgress(bars, job, total, skipped)
            payload = ray.put(job.payload)
            task = ray.remote(_ray_run_unit).options(num_cpus=cpus, num_gpus=gpus, max_retries=ex.max_retries,
                                                     retry_exceptions=False)
            threads = max(1, int(cpus))
            refs = {task.remote(payload, device, threads, u): u for u in heaviest_first(units)}
            while refs:
                progress.set(running=_count_running(job))
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                progress.poll()
                for ref in ready:
                    unit = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.WorkerCrashedError:
                        result = failed_result(unit, f"its worker process died ({ex.max_retries + 1} attempts)")
                    except ray.exceptions.RayError as e:
                        result = failed_result(unit, f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    progress.set(failed=len(result.errors))
                    collect(result)
        finally:
            for ref in refs:  # interrupted: stop what is still queued or running
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def _count_running(job: GridJob) -> int:
    """Units in flight anywhere: the marker files workers keep in ``<run>/.running`` while a unit runs."""
    try:
        return len(os.listdir(job.run_dir / ".running"))
    except OSError:
        return 0


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_INSTALL) from None
    return ray


def check_executor(cfg: RunConfig) -> None:
    """Flag combinations that cannot work, before anything is written; Ray must be importable for ``ray``."""
    ex = cfg.executor
    if ex.kind == "ray":
        if ex.jobs not in (0, 1):
            raise UsageError("--jobs is for --executor local; on Ray, units run as the cluster's resources allow "
                             "(executor.cpus_per_unit, executor.gpus_per_unit)")
        import_ray()
    elif ex.address:
        raise UsageError("--ray-address needs --executor ray")


WORKER_MEM_GB = 2.0  # what one CPU worker may need at most (quick grid: 0.5-1.1 GB peak RSS per worker)


def auto_jobs(n_units: int, device: torch.device) -> int:
    """``--jobs auto``: how many local worker processes a grid of ``n_units`` units gets.

    One unit, or a single GPU: 1 (in this process, with its training bars). Several GPUs: one worker per GPU. A CPU:
    one single-thread worker per core, as many as the units and the free memory allow. Small networks do not fill
    two cores from one process: on two cores the quick grid of every method took 29.5 minutes on two single-thread
    workers against 51.9 in one process with two threads (with channels-last training; docs/performance.md)."""
    if n_units <= 1 or device.type not in ("cpu", "cuda"):
        return 1
    if device.type == "cuda":
        return max(1, min(n_units, torch.cuda.device_count())) if device.index is None else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    free = _available_gb()
    by_memory = int(free // WORKER_MEM_GB) if math.isfinite(free) else n_units  # inf // 2 is nan: no int of it
    return max(1, min(n_units, cores, by_memory))


def _available_gb() -> float:
    """Free memory (MemAvailable) in GiB; unknown (not Linux): as if plenty."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def local_jobs(cfg: RunConfig, n_units: int, device: torch.device) -> int:
    """The number of local worker processes: ``--jobs N`` as given, ``auto`` (0) resolved by ``auto_jobs``."""
    return cfg.executor.jobs or auto_jobs(n_units, device)


def make_executor(job: GridJob, n_units: int) -> Sequential | LocalPool | RayExecutor:
    ex = job.cfg.executor
    if ex.kind == "ray":
        return RayExecutor(job)
    jobs = local_jobs(job.cfg, n_units, job.device)
    return Sequential(job) if jobs == 1 else LocalPool(job, jobs)


