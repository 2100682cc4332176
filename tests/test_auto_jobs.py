"""``--jobs auto`` (the default): how many local worker processes a grid gets, and how the flag is read."""

from __future__ import annotations

import pytest
import torch

from bench.commands.args import jobs as _jobs
from bench.config import ExecutorConfig, RunConfig
from bench.run import executors
from bench.run.executors import auto_jobs  # the real rule (conftest keeps in-process test grids in one process)

CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: (cores, free GiB)."""
    def set_machine(cores: int, free_gb: float) -> None:
        monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(executors, "_available_gb", lambda: free_gb)
    return set_machine


@pytest.mark.parametrize("cores, free_gb, units, expected", [
    (2, 20.0, 12, 2),   # the 2-core CI machine, the whole grid: one worker per core
    (2, 20.0, 1, 1),    # one unit (the quick start): in this process, with its training bars
    (16, 64.0, 3, 3),   # no more workers than units
    (16, 64.0, 40, 16),  # no more workers than cores
    (16, 5.0, 40, 2),   # no more workers than the free memory holds (2 GiB each)
    (8, 1.0, 40, 1),    # too little memory for two: in this process
    (4, float("inf"), 40, 4),  # free memory unknown (no /proc/meminfo): cores and units decide
])
def test_auto_is_one_worker_per_core_bounded_by_units_and_memory(machine, cores, free_gb, units, expected):
    machine(cores, free_gb)
    assert auto_jobs(units, CPU) == expected


def test_auto_on_gpus_is_one_worker_per_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert auto_jobs(12, torch.device("cuda")) == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert auto_jobs(12, torch.device("cuda")) == 4
    assert auto_jobs(3, torch.device("cuda")) == 3
    assert auto_jobs(12, torch.device("cuda:1")) == 1  # one named GPU: every unit there, one after the other


def test_given_jobs_are_kept_and_auto_is_resolved(machine):
    machine(2, 20.0)
    assert executors.local_jobs(RunConfig(executor=ExecutorConfig(jobs=3)), 12, CPU) == 3
    assert executors.local_jobs(RunConfig(executor=ExecutorConfig(jobs=1)), 12, CPU) == 1
    assert RunConfig().executor.jobs == 0  # auto is the default
    # the conftest fixture stands in for the rule in this process's grids; the rule itself is tested above
    assert executors.local_jobs(RunConfig(), 12, CPU) == 1


def test_the_flag_reads_auto_and_numbers():
    assert _jobs("auto") == 0 and _jobs("AUTO") == 0 and _jobs("3") == 3
    with pytest.raises(Exception, match="invalid --jobs value: 'two'; give a number or auto"):
        _jobs("two")


def test_parallel_workers_start_the_heaviest_units_first():
    from bench.run.grid import heaviest_first, plan_units

    methods = ["msp", "mcdropout", "trustscore", "ensemble", "advtrain", "oodgan", "cure"]
    units = plan_units(RunConfig(methods=tuple(methods), seeds=(0, 1)), methods)
    ordered = heaviest_first(units)
    assert sorted(ordered, key=units.index) == units  # a permutation
    assert [u.methods for u in ordered[:4]] == [("oodgan",), ("oodgan",), ("advtrain",), ("advtrain",)]
    assert [u.seed for u in ordered[:2]] == [0, 1]  # ties in plan order
    assert {u.methods for u in ordered[-4:]} == {("trustscore",), ("ensemble",)}  # they reuse trained networks
