"""Fault injection for tests: ``BENCH_FAULT=POINT[@N][:SIGNAL]`` makes the process send itself SIGNAL (KILL or INT,
default KILL) the N-th time (default 1) it passes a point matching the shell pattern POINT.

Points (see tests/test_faults.py): ``batch`` (each training batch), ``eval`` (before each eval set of a method is
scored), ``write:<folder>/<file>`` (inside every atomic file write, after the temporary file is complete and
before it replaces the target: ``write:cells/*``, ``write:predictions/*``, ``write:fitted/*``,
``write:<run>/checkpoints.json``, ``write:<cache>/*.pt``, ...). Unset (the normal case) it costs one environment
lookup per point.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "BENCH_FAULT"
_counts: dict[str, int] = {}  # per spec, so a test that changes the variable starts counting afresh


def hit(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    pattern, _, sig = spec.rpartition(":") if spec.upper().endswith((":KILL", ":INT")) else (spec, "", "")
    pattern, at, nth = pattern.rpartition("@")
    if not at:
        pattern, nth = nth, ""
    if not fnmatch.fnmatchcase(point, pattern):
        return
    _counts[spec] = _counts.get(spec, 0) + 1
    if _counts[spec] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGINT if sig.upper() == "INT" else signal.SIGKILL)


def reset() -> None:
    """Forget the counts (tests that run several faulted runs in one process)."""
    _counts.clear()
