"""Executors: the local sequential runner, ``--jobs 2`` worker processes and Ray (a local instance on loopback,
shared by this module) run the same tiny grid to the same result rows; a worker that dies is retried or reported;
``--resume`` redoes nothing finished; two processes racing on one checkpoint key train it once."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from bench.cache import CheckpointCache
from bench.cli import main
from bench.config import RunConfig
from bench.methods import METHODS
from bench.run.grid import plan_units
from bench.run.store import RunStore

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


PLUGIN = Path(__file__).parent / "plugins" / "testkill.py"
# A tiny grid: 2 methods x 2 seeds sharing one baseline per seed, two eval sets and the cost cell.
GRID = ["run", "--profile", "smoke", "--methods", "msp,mcdropout", "--seeds", "0,1", "--device", "cpu",
        "--datasets", "mnist,ood:fashion", "--no-progress", "--set", "split.max_train=1000",
        "--set", "eval.max_eval=300", "--set", "eval.cost_images=100", "--set", "mcdropout.passes=3",
        "--set", "executor.cpus_per_unit=1"]  # one torch thread everywhere: bitwise-equal CPU results
TIMING = {"sec_per_epoch", "first_epoch_sec", "train_sec_total", "infer_ms_per_1k", "peak_rss_mb",
          "peak_cuda_mem_mb"}

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None and not os.environ.get("BENCH_REQUIRE_RAY"),
                               reason="ray is not installed (pip install -e '.[ray]'); CI sets BENCH_REQUIRE_RAY")


def rows(run: Path) -> list[tuple]:
    """The result rows, sorted, less what differs by design: the run id (the directory name) and timing/memory
    metrics of the cost cell."""
    with open(run / "results.csv") as f:
        return sorted((r["method"], r["backbone"], r["seed"], r["fold"], r["eval_set"], r["shift"], r["severity"],
                       r["metric"], r["value"]) for r in csv.DictReader(f) if r["metric"] not in TIMING)


@pytest.fixture(scope="module")
def testkill():
    """The test-only method, registered here and in every worker (through BENCH_PLUGINS); unregistered after."""
    from bench import plugins

    old = os.environ.get("BENCH_PLUGINS")
    os.environ["BENCH_PLUGINS"] = str(PLUGIN)
    plugins.load_plugins()
    yield "testkill"
    METHODS._items.pop("testkill", None)
    METHODS._docs.pop("testkill", None)
    plugins._loaded.remove(str(PLUGIN.resolve()))
    if old is None:
        del os.environ["BENCH_PLUGINS"]
    else:
        os.environ["BENCH_PLUGINS"] = old


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: the grid in this process (one torch thread, as the workers get)."""
    root = tmp_path_factory.mktemp("seq")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*GRID, "--out", str(root / "run"), "--cache-dir", str(root / "cache")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, no dashboard, loopback only."""
    if ray is None:
        pytest.fail("BENCH_REQUIRE_RAY is set but ray is not importable: pip install -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_units_group_the_methods_that_share_a_baseline():
    cfg = RunConfig(methods=("msp", "mcdropout", "energy", "confidnet", "temperature"), seeds=(0, 1), folds=2)
    units = plan_units(cfg, list(cfg.methods))
    assert [(u.fold, u.seed, u.methods) for u in units[:2]] == [
        (0, 0, ("msp", "mcdropout", "energy", "temperature")), (0, 0, ("confidnet",))]
    assert len(units) == 2 * 2 * 2


@pytest.mark.slow
def test_local_jobs_gives_the_same_rows_as_sequential(sequential, tmp_path):
    run = tmp_path / "run"
    assert main([*GRID, "--jobs", "2", "--out", str(run), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert rows(run) == rows(sequential / "run")
    assert json.loads((run / "checkpoints.json").read_text()).keys() == \
        json.loads((sequential / "run" / "checkpoints.json").read_text()).keys()
    assert not (run / "errors.json").exists() and not (run / ".running").exists()
    # every unit records when it ran, where and with how many threads (tools/grid_timeline.py reads them)
    for where, workers in ((sequential / "run", 1), (run, 2)):
        units = RunStore(where).unit_times()
        assert len(units) == 2 and all(u["started"] <= u["finished"] and u["threads"] == 1 for u in units)
        assert sorted(u["seed"] for u in units) == [0, 1] and len({u["pid"] for u in units}) == workers


@pytest.mark.slow
@needs_ray
def test_ray_gives_the_same_rows_as_sequential(sequential, ray_instance, tmp_path):
    run = tmp_path / "run"
    assert main([*GRID, "--executor", "ray", "--out", str(run), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert rows(run) == rows(sequential / "run")


@pytest.mark.slow
@needs_ray
def test_a_sequential_run_resumes_on_ray(sequential, ray_instance, tmp_path, capsys):
    """The executor is not part of what determines results: a run resumes under another one."""
    run = tmp_path / "run"
    shutil.copytree(sequential / "run", run)
    (run / "cells" / "msp__seed1__fold0__ood_fashion.json").unlink()
    assert main([*GRID, "--executor", "ray", "--out", str(run), "--cache-dir", str(sequential / "cache"),
                 "--resume"]) == 0
    assert "(1 cells computed, 11 resumed)" in capsys.readouterr().out
    assert rows(run) == rows(sequential / "run")


def _kill_grid(tmp_path, sequential, deaths: int, *extra: str) -> list[str]:
    # The baselines come from the reference run's cache: only the dying method and its retries cost time.
    return [*GRID, "--methods", "msp,testkill", "--seeds", "0", "--set", f"testkill.deaths={deaths}",
            "--set", f"testkill.marker_dir={tmp_path / 'markers'}", "--cache-dir", str(sequential / "cache"),
            "--out", str(tmp_path / "run"), *extra]


@pytest.mark.slow
def test_local_worker_killed_once_is_retried(sequential, testkill, tmp_path, capsys):
    assert main(_kill_grid(tmp_path, sequential, 1, "--jobs", "2")) == 0
    assert "worker died running testkill seed 0 fold 0; retrying it" in capsys.readouterr().err
    assert {r[0] for r in rows(tmp_path / "run")} == {"msp", "testkill"}


@pytest.mark.slow
def test_local_worker_killed_twice_is_reported_and_resume_finishes_the_grid(sequential, testkill, tmp_path,
                                                                             capsys):
    assert main(_kill_grid(tmp_path, sequential, 2, "--jobs", "2", "--set", "executor.max_retries=1")) == 1
    err = capsys.readouterr().err
    assert "testkill seed 0: its worker process died (2 attempts)" in err
    assert json.loads((tmp_path / "run" / "errors.json").read_text())[0]["method"] == "testkill"
    assert {r[0] for r in rows(tmp_path / "run")} == {"msp"}
    cells = tmp_path / "run" / "cells"
    stamps = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    # --resume (the markers say the method has died its two deaths): only the failed method's cells are computed
    assert main(_kill_grid(tmp_path, sequential, 2, "--jobs", "2", "--set", "executor.max_retries=1",
                           "--resume")) == 0
    assert "(3 cells computed, 3 resumed)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json") if p.name in stamps} == stamps
    assert not (tmp_path / "run" / "errors.json").exists()


@pytest.mark.slow
@needs_ray
def test_ray_worker_killed_is_retried_then_reported(sequential, testkill, ray_instance, tmp_path, capsys):
    assert main(_kill_grid(tmp_path / "a", sequential, 1, "--executor", "ray")) == 0
    assert {r[0] for r in rows(tmp_path / "a" / "run")} == {"msp", "testkill"}
    assert main(_kill_grid(tmp_path / "b", sequential, 5, "--executor", "ray", "--set",
                           "executor.max_retries=1")) == 1
    assert "testkill seed 0: its worker process died (2 attempts)" in capsys.readouterr().err
    assert {r[0] for r in rows(tmp_path / "b" / "run")} == {"msp"}


def test_ray_missing_is_one_line_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main([*GRID, "--executor", "ray", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[ray]'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, msg", [
    (["--jobs", "-1"], "executor.jobs must be >= 1, or 0 for auto"),
    (["--jobs", "2", "--executor", "ray"], "--jobs is for --executor local"),
    (["--ray-address", "head:6379"], "--ray-address needs --executor ray"),
    (["--executor", "dask"], "invalid choice: 'dask'"),
])
def test_bad_executor_flags_are_one_line(flags, msg, tmp_path, capsys):
    assert main([*GRID, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def _train_once(root: str, log: str, start, trying, me: int, count, overlap) -> None:
    """Both processes pass ``start`` together and announce themselves at the lock (``trying``); whoever gets the
    key's lock first holds it until the other is at the lock too, then waits on ``overlap`` (set by a second process
    inside "look up, else train") instead of sleeping: without the lock the other would be inside by then."""
    cache = CheckpointCache(root)
    start.wait(60)
    trying[me].set()
    with cache.lock("k"):
        with count.get_lock():
            count.value += 1
            if count.value > 1:
                overlap.set()
        trying[1 - me].wait(60)
        overlap.wait(2.0)
        if cache.get("k") is None:
            with open(log, "a") as f:
                f.write("trained\n")
            cache.put("k", {"v": 1})
        with count.get_lock():
            count.value -= 1


def test_two_processes_racing_on_one_key_train_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, count, overlap = ctx.Barrier(2), ctx.Value("i", 0), ctx.Event()
    trying = [ctx.Event(), ctx.Event()]
    procs = [ctx.Process(target=_train_once, args=(str(tmp_path / "cache"), str(tmp_path / "log"), start, trying,
                                                    i, count, overlap)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert not overlap.is_set()  # never two processes inside the locked block at once
    assert (tmp_path / "log").read_text() == "trained\n"
    assert CheckpointCache(tmp_path / "cache").get("k") == {"v": 1}


def test_bad_plugin_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_PLUGINS", "no_such_module_xyz")
    assert main([*GRID, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "BENCH_PLUGINS: cannot import no_such_module_xyz" in err and err.count("\n") == 1


def test_a_path_a_node_cannot_see_is_named(tmp_path):
    from bench.run.executors import _ray_check_paths

    (tmp_path / ".visible-t1").write_text("ok")
    assert _ray_check_paths([str(tmp_path)], "t1") == ""
    assert _ray_check_paths([str(tmp_path)], "t2").startswith(f"{tmp_path} is not visible from node ")
