"""Fault injection: kill a run (SIGINT = Ctrl-C, SIGKILL) at a point of its work, resume it, and check that the
result rows and every index are those of an uninterrupted run. Faults are injected with ``BENCH_FAULT`` (see
bench/faults.py), never with sleeps: the process signals itself exactly when it reaches the point.

Every faulted run starts with an empty checkpoint cache, so that training is part of what is interrupted, and runs in a
child process with SIGINT's default disposition, as a user's run in a terminal has: in the whole suite an earlier test
leaves SIGINT ignored in the pytest process (which test was not found), an in-process Ctrl-C then does nothing, and
an ignored SIGINT is inherited by children. The fast cases run in the default suite; the
sweep over every other (point, signal) pair is marked ``slow`` (deselect with ``-m 'not slow'``; CI runs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny import TINY, indices, rows, tiny
from bench import faults

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


# point -> what it interrupts (the run has 2 units of 2 methods x 3 cells: 12 cells, 4 fitted records)
POINTS = {
    "batch@3": "training of the first baseline, mid-epoch",
    "batch@7": "training of the second seed's baseline",
    "eval@2": "evaluation: before msp's second eval set",
    "eval@5": "evaluation: energy of the first unit",
    "write:cells/*@1": "writing the first cell (its predictions are already written)",
    "write:cells/*@7": "writing the first cell of the second unit",
    "write:predictions/*@3": "writing a predictions file",
    "write:fitted/*@2": "writing a fitted-checkpoint record",
    "write:*/checkpoints.json@1": "writing checkpoints.json",
    "write:*/results.csv@2": "writing results.csv",
    "write:*/manifest.json@1": "writing the manifest (before any cell)",
    "write:eval_sets/*@1": "writing an eval-set record",
    "write:cache/*.pt@1": "writing the first trained checkpoint into the cache",
}
FAST_INT = ("batch@3", "eval@2", "write:cells/*@7", "write:*/checkpoints.json@1", "write:fitted/*@2")
FAST_KILL = ("write:cells/*@7",)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = tiny(root / "run", root / "cache")
    assert code == 0, err
    return root


def normalized(run: Path, cache: Path) -> dict:
    """The indices with this run's cache folder named ``<cache>`` (each faulted run has its own cache)."""
    return json.loads(json.dumps(indices(run)).replace(str(cache.resolve()), "<cache>").replace(str(cache), "<cache>"))


def check_resumed(run: Path, cache: Path, reference: Path) -> None:
    code, _, err = tiny(run, cache, "--resume")
    assert code == 0, err
    assert rows(run) == rows(reference / "run")
    assert normalized(run, cache) == normalized(reference / "run", reference / "cache")
    assert not [p for p in run.rglob(".*.tmp")], "temporary files left behind"




def faulted_child(point: str, signal_name: str, tmp_path: Path) -> tuple[Path, Path]:
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, faults.ENV: f"{point}:{signal_name}", "COLUMNS": "200"}
    # an ignored SIGINT is inherited across exec (and Python then installs no Ctrl-C handler): give the child the
    # default disposition, as a terminal gives a user's run, whatever an earlier test left in this process
    proc = subprocess.run([sys.executable, "-m", "bench", *TINY, "--out", str(run), "--cache-dir", str(cache)],
                          env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    expected = -9 if signal_name == "KILL" else 130
    assert proc.returncode == expected, f"the fault at {point} did not stop the run: {proc.stderr[-2000:]}"
    return run, cache


@pytest.mark.parametrize("point", FAST_INT)
def test_ctrl_c_then_resume_gives_the_uninterrupted_run(point, reference, tmp_path):
    check_resumed(*faulted_child(point, "INT", tmp_path), reference)


@pytest.mark.parametrize("point", FAST_KILL)
def test_sigkill_then_resume_gives_the_uninterrupted_run(point, reference, tmp_path):
    check_resumed(*faulted_child(point, "KILL", tmp_path), reference)


SWEEP = [(p, "INT") for p in POINTS if p not in FAST_INT] + [(p, "KILL") for p in POINTS if p not in FAST_KILL]


@pytest.mark.slow
@pytest.mark.parametrize("point, signal_name", SWEEP)
def test_fault_sweep(point, signal_name, reference, tmp_path):
    """Every point, both signals (less the fast cases above), each in a child process."""
    check_resumed(*faulted_child(point, signal_name, tmp_path), reference)

