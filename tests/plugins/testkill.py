"""A test-only method (loaded through BENCH_PLUGINS by tests/test_executors.py, never by the package): the msp
baseline, except that fitting it kills its worker process (``os._exit``) the first ``deaths`` times, counted by
marker files in ``marker_dir``, so that the executors' handling of dead workers can be tested end to end."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register


@dataclass(frozen=True)
class TestKillConfig:
    deaths: int = 0  # how many fits (over all processes) die before one succeeds
    marker_dir: str = ""


@register("testkill", "test only: msp whose first fits kill their worker process")
class TestKill(ConfidenceMethod):
    Config = TestKillConfig
    training = Training.FROZEN_BASELINE  # reads the baseline, trains nothing; a unit of its own, so it dies alone

    def _fit(self, train, val, ctx: FitContext) -> None:
        markers = Path(self.config.marker_dir)
        markers.mkdir(parents=True, exist_ok=True)
        if len(list(markers.glob("death-*"))) < self.config.deaths:
            (markers / f"death-{uuid.uuid4().hex}").touch()
            os._exit(1)  # a worker that dies without a word (as under the OOM killer or a node loss)
        super()._fit(train, val, ctx)
