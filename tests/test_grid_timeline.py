"""tools/grid_timeline.py on constructed unit records: wall times, pauses and the worker-seconds of a run resumed over
two sittings, by hand."""

from __future__ import annotations

import json

import pytest
from _tools import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("grid_timeline")


def unit(methods, seed, start, end, pid):
    return {"methods": methods, "seed": seed, "fold": 0, "started": start, "finished": end, "pid": pid, "threads": 1}


@pytest.fixture
def run(tmp_path):
    """Two workers; a first sitting 0-1,000 s, a second 5,000-5,600 s (the gap between them is no work)."""
    records = [unit(["a"], 0, 0.0, 600.0, 11), unit(["b"], 0, 0.0, 1000.0, 12),
               unit(["a"], 1, 5000.0, 5400.0, 21), unit(["b"], 1, 5000.0, 5600.0, 22)]
    (tmp_path / "units").mkdir()
    (tmp_path / "cells").mkdir()
    for i, r in enumerate(records):
        (tmp_path / "units" / f"u{i}.json").write_text(json.dumps(r))
    return tmp_path


def test_worker_seconds_by_hand(tool, run):
    units = tool.from_records(run)
    busy, per_seed = tool.worker_seconds(units, [])
    assert per_seed == {0: 1600.0, 1: 1000.0} and busy == 2600.0
    # a stop of the whole run (both workers): 100 s inside both units of seed 0, 50 s inside both of seed 1
    busy, per_seed = tool.worker_seconds(units, [(200.0, 300.0), (5100.0, 5150.0)])
    assert per_seed == {0: 1400.0, 1: 900.0} and busy == 2300.0
    assert tool.overlap([(200.0, 300.0)], 250.0, 1000.0) == 50.0
    assert tool.concurrency(units) == 2
    assert tool.concurrency([{"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 2.0}]) == 1  # one after the other


def test_the_report_states_span_and_worker_seconds(tool, run, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["grid_timeline.py", str(run), "--pause", "200:300"])
    tool.main()
    out = capsys.readouterr().out
    assert "units ran from first start to last end: 5500 s" in out  # 5,600 s less the 100 s pause
    assert "worker-seconds): 2400 s = 0.67 h; per seed: 0 1400 s, 1 1000 s" in out
    assert "divided by the 2 unit(s) that ran at once at most: 0.33 h" in out  # not the 4 processes seen


def test_pauses_as_utc_times_and_from_the_run_s_record(tool, run, capsys, monkeypatch):
    assert tool.parse_pause("200:300") == (200.0, 300.0)
    assert tool.parse_pause("1970-01-01T00:03:20,1970-01-01T00:05:00") == (200.0, 300.0)  # UTC by default
    assert tool.parse_pause("1970-01-01T01:03:20+01:00,1970-01-01T00:05:00") == (200.0, 300.0)
    (run / "pauses.txt").write_text("# stopped for a CI run\n1970-01-01T00:03:20,1970-01-01T00:05:00\n\n")
    monkeypatch.setattr("sys.argv", ["grid_timeline.py", str(run)])
    tool.main()
    assert "units ran from first start to last end: 5500 s" in capsys.readouterr().out  # as --pause 200:300


def test_a_malformed_pause_is_one_line(tool, run, monkeypatch):
    (run / "pauses.txt").write_text("yesterday,today\n")
    monkeypatch.setattr("sys.argv", ["grid_timeline.py", str(run)])
    with pytest.raises(SystemExit, match="a pause is START:END in Unix seconds or START,END in ISO-8601 times"):
        tool.main()
