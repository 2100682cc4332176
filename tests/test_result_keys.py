"""One definition of the config keys that determine results (bench/run/result_keys.py), used by resume, report and
compare alike; a checkpoint's cache key reads none of the placement keys."""

from __future__ import annotations

import dataclasses

import pytest

from _runs import manifest, write_run
from bench.config import ExecutorConfig, RunConfig
from bench.datasets.splits import SplitSpec
from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.core.base import FitContext
from bench.report import gate as compare
from bench.report import runs
from bench.run.provenance import prepare_store
from bench.run.result_keys import CELL_KEYS, PLACEMENT_KEYS, RESULT_KEYS, result_config
from bench.run.store import RunStore


def test_result_and_placement_keys_partition_the_run_config():
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    assert sorted(RESULT_KEYS + PLACEMENT_KEYS) == sorted(fields)
    assert not set(RESULT_KEYS) & set(PLACEMENT_KEYS)
    assert set(CELL_KEYS) <= set(RESULT_KEYS)


def test_report_and_compare_derive_their_keys_from_the_one_definition():
    # compare: every result key but the methods and eval sets (seeds stay: a baseline value is a mean over seeds)
    assert set(compare.CONFIG_KEYS) == set(RESULT_KEYS) - {"methods", "datasets", "ood"}
    # report: a run may add methods, seeds and eval sets, and run elsewhere; every other result key must agree
    assert set(runs.FREE_KEYS) == set(PLACEMENT_KEYS) | set(CELL_KEYS) | {"method_options"}
    # a key added later reads as its default in a run written before it (a pre-benchmark run is an MNIST run)
    assert result_config({"device": "cpu", "executor": {"jobs": 2}, "folds": 1}) == {"benchmark": "mnist", "folds": 1}


def _cache_key(cfg: RunConfig) -> str:
    """As the unit worker fits a method: the run's recipe and the split of fold 0 (bench/run/worker.py)."""
    spec = SplitSpec(cfg.split.val_fraction, cfg.split.split_seed, cfg.folds, 0, cfg.split.max_train)
    method = METHODS.get("msp")(backbone=cfg.backbone, seed=cfg.seeds[0])
    return method.cache_key(FitContext(recipe=cfg.train, split_id=spec.split_id))


def test_no_cache_key_reads_a_placement_key():
    cfg = RunConfig()
    moved = dataclasses.replace(cfg, device="cpu", data_dir="elsewhere", cache_dir="other-cache",
                                executor=ExecutorConfig(jobs=2), save_features=True)
    assert {f: getattr(cfg, f) != getattr(moved, f) for f in PLACEMENT_KEYS} == dict.fromkeys(PLACEMENT_KEYS, True)
    assert _cache_key(moved) == _cache_key(cfg)
    assert _cache_key(dataclasses.replace(cfg, folds=2)) != _cache_key(cfg)  # a result key does move it


def test_resume_under_another_executor_is_allowed_and_another_recipe_is_not(tmp_path):
    import torch

    cfg = RunConfig(profile="smoke")
    store = prepare_store(cfg, tmp_path / "run", False, ["bench"], torch.device("cpu"))
    store.write_cell("x", [])  # the run holds results: a resume compares configs
    prepare_store(dataclasses.replace(cfg, executor=ExecutorConfig(jobs=2), cache_dir="c2"), store.dir, True,
                  ["bench"], torch.device("cpu"))
    with pytest.raises(UsageError, match="folds: 1 in the run, 2 now"):
        prepare_store(dataclasses.replace(cfg, folds=2), store.dir, True, ["bench"], torch.device("cpu"))


def test_report_combines_runs_made_with_other_executors(tmp_path):
    # before one definition, report compared the executor section (a --jobs 2 run could not join a --jobs 1 run)
    a = write_run(tmp_path, "a", seeds=(0, 1))
    b = write_run(tmp_path, "b", seeds=(2,))
    m = manifest("b", ["alpha", "beta", "gamma"], (2,))
    m["config"]["executor"] = {"kind": "local", "jobs": 2}
    RunStore(b).write_manifest(m)
    assert sorted(runs.load_runs([a, b]).rows["seed"].unique()) == [0, 1, 2]
    m["config"]["train"] = {"epochs": 5}  # a result key still refuses
    RunStore(b).write_manifest(m)
    with pytest.raises(UsageError, match="train differs"):
        runs.load_runs([a, b])
