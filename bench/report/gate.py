"""The regression gate: compare a run with a committed baseline, metric by metric, within per-metric tolerances.

A baseline is a JSON file (``SCHEMA`` below) holding the tracked values of one reference run (mean over its
seeds/folds per (method, eval set, metric)), the tolerances, and the config that produced it. ``compare`` fails
(exit 1) when a tracked value moves beyond its tolerance in either direction (an unexpected improvement is also a
change to look at; accept it with ``--update``) or disappears. Wall times and memory are never tracked: they are
too noisy on shared machines (the micro-benchmarks in tests/benchmarks watch speed instead).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.report.metric_facts import default_tolerances, metric_info
from bench.report.runs import RunSet
from bench.report.stats import summarize
from bench.run.result_keys import CELL_KEYS, RESULT_KEYS, with_added
from bench.utils import atomic_write_text

SCHEMA = 1
KIND = "bench-baseline"
# Absolute tolerances in the metric's own units ('*': every tracked metric without its own), from
# bench/report/metric_facts.py; a baseline file carries its own copy, and --tolerance overrides both.
DEFAULT_TOLERANCES: dict[str, float] = default_tolerances()
# Config keys that must match between the baseline's run and the compared run: those that determine results
# (bench/run/result_keys.py) less the methods and eval sets (a cell missing from the run fails, a new one is
# noted). Seeds stay: a baseline value is a mean over its seeds.
CONFIG_KEYS = tuple(k for k in RESULT_KEYS if k not in CELL_KEYS or k == "seeds")


def parse_tolerances(items: list[str]) -> dict[str, float]:
    """``['auroc=1.5', '*=0.5']`` -> {'auroc': 1.5, '*': 0.5} (absolute, in the metric's units)."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            tol = float(value)
        except ValueError:
            tol = float("nan")
        if not sep or not key.strip() or not math.isfinite(tol) or tol < 0:
            raise UsageError(f"--tolerance {item!r} is malformed; use METRIC=ABS (>= 0), e.g. --tolerance auroc=1.5 "
                             "or --tolerance '*=0.5' for every metric without its own")
        out[key.strip()] = tol
    return out


def check_tolerance_names(tolerances: dict[str, float], known: set[str]) -> None:
    """Every --tolerance key must be '*' or a tracked metric of the run or baseline (catches typos)."""
    import difflib

    for key in tolerances:
        if key != "*" and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (tracked: {', '.join(sorted(known))})"
            raise UsageError(f"--tolerance {key}: unknown metric{hint}")


def tolerance(metric: str, tolerances: dict[str, float], baseline: float | None = None) -> float:
    """The absolute tolerance of ``metric``: its own, else '*'; a relative one (``MetricInfo.relative``) is that
    fraction of the baseline value's magnitude."""
    tol = tolerances.get(metric, tolerances.get("*", DEFAULT_TOLERANCES["*"]))
    if metric_info(metric).relative and baseline is not None:
        return tol * abs(baseline)
    return tol


def merged_tolerances(baseline: dict[str, float], overrides: dict[str, float] | None) -> dict[str, float]:
    """Each metric's tolerance for one comparison: bench's defaults, then the baseline file's, then the command
    line's. On the command line ``*=X`` means every metric not named there (so ``--tolerance '*=0.1'`` tightens the
    whole gate); in a baseline file ``*`` is the tolerance of metrics without their own."""
    tolerances = {**DEFAULT_TOLERANCES, **baseline}
    if overrides and "*" in overrides:
        tolerances = dict.fromkeys(tolerances, overrides["*"])
    return {**tolerances, **(overrides or {})}


def is_tracked(metric: str) -> bool:
    """Everything but wall times and memory (``MetricInfo.tracked``)."""
    return metric_info(metric).tracked


def tracked_values(runs: RunSet) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(method, eval set, metric) -> (mean over seeds/folds, n) for every tracked metric of the runs."""
    df = runs.rows[[is_tracked(m) for m in runs.rows["metric"]]]
    out: dict[tuple[str, str, str], tuple[float, int]] = {}
    for (method, eval_set, metric), g in df.groupby(["method", "eval_set", "metric"], sort=True):
        mean, _, n = summarize(g["value"].tolist())
        out[(str(method), str(eval_set), str(metric))] = (mean, n)
    return out


def _run_config(runs: RunSet) -> dict[str, Any]:
    cfg = with_added(next(iter(runs.manifests.values())).get("config", {}))
    return {k: cfg.get(k) for k in CONFIG_KEYS}


def make_baseline(runs: RunSet, tolerances: dict[str, float]) -> dict[str, Any]:
    if len(runs.manifests) != 1:
        raise UsageError("a baseline is made from one run; give a single run directory")
    manifest = next(iter(runs.manifests.values()))
    values = tracked_values(runs)
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {k: manifest.get(k) for k in ("run_id", "command", "git_sha", "device_name", "versions")},
        "config": _run_config(runs),
        "tolerances": {**DEFAULT_TOLERANCES, **tolerances},
        "metrics": [{"method": m, "eval_set": e, "metric": k, "value": None if not math.isfinite(v) else v, "n": n}
                    for (m, e, k), (v, n) in sorted(values.items())],
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and check a baseline file; a missing, corrupt or older-schema file is a one-line UsageError."""
    fix = f"regenerate it with `python -m bench compare RUN --baseline {path} --update`"
    if not path.is_file():
        raise UsageError(f"baseline {path} does not exist; make one with `python -m bench compare RUN --baseline "
                         f"{path} --update`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"baseline {path} is not valid JSON; {fix}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise UsageError(f"{path} is not a bench baseline (no \"kind\": \"{KIND}\"); {fix}")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise UsageError(f"baseline {path} has schema {schema!r} but this bench reads schema {SCHEMA}; {fix}")
    metrics = data.get("metrics")
    if not isinstance(metrics, list) or not all(isinstance(r, dict) and {"method", "eval_set", "metric", "value"}
                                                <= set(r) for r in metrics):
        raise UsageError(f"baseline {path} has a malformed \"metrics\" list; {fix}")
    if not isinstance(data.get("tolerances", {}), dict):
        raise UsageError(f"baseline {path} has malformed \"tolerances\"; {fix}")
    for r in metrics:  # JSON has no NaN: a metric that was not finite is stored as null
        if not all(isinstance(r[k], str) for k in ("method", "eval_set", "metric")) or not (
                r["value"] is None or _is_number(r["value"])):
            raise UsageError(f"baseline {path}: entry {r.get('method')!r}/{r.get('eval_set')!r}/{r.get('metric')!r} "
                             f"has value {r['value']!r}, not a number; {fix}")
    for k, v in data.get("tolerances", {}).items():
        if not _is_number(v) or v < 0:
            raise UsageError(f"baseline {path}: tolerance {k}={v!r} is not a number >= 0; {fix}")
    if not isinstance(data.get("config", {}), dict):
        raise UsageError(f"baseline {path} has a malformed \"config\"; {fix}")
    return data


@dataclass(frozen=True)
class Change:
    method: str
    eval_set: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float

    @property
    def delta(self) -> float:
        if self.baseline is None or self.current is None:
            return float("nan")
        return self.current - self.baseline

    @property
    def verdict(self) -> str:
        if self.current is None:
            return "missing from the run"
        if self.baseline is None or not math.isfinite(self.current):
            return "was n/a, now a number" if self.baseline is None else "now n/a"
        info = metric_info(self.metric)
        if info.better == 0:
            return "changed"
        if info.rate_dependent:  # e.g. AUPR-Error rises with the error rate: no direction without the rate
            return "changed (moves with the error rate)"
        better = info.better
        return "better" if better * self.delta > 0 else "worse"


@dataclass
class Comparison:
    checked: int
    failures: list[Change]
    new: list[tuple[str, str, str]]  # in the run, not in the baseline (reported, not failed)

    @property
    def ok(self) -> bool:
        return not self.failures


def _close(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol + 1e-9 * max(1.0, abs(a), abs(b))


def check_config(runs: RunSet, baseline: dict[str, Any], path: Path) -> None:
    if len(runs.manifests) != 1:
        raise UsageError("compare checks one run against a baseline; give a single run directory")
    given = baseline.get("config") or {}
    ours, theirs = _run_config(runs), with_added(given)  # a baseline older than a key holds its old value
    for key in CONFIG_KEYS:
        if key in given and ours.get(key) != theirs.get(key):
            raise UsageError(f"the run's {key} ({ours.get(key)!r}) differs from the baseline's ({theirs.get(key)!r}); "
                             f"compare a run made the same way, or accept the change with --update "
                             f"(writes {path})")


def compare(runs: RunSet, baseline: dict[str, Any], overrides: dict[str, float] | None = None) -> Comparison:
    tolerances = merged_tolerances(baseline.get("tolerances", {}), overrides)
    current = tracked_values(runs)
    failures: list[Change] = []
    seen = set()
    for r in baseline["metrics"]:
        key = (r["method"], r["eval_set"], r["metric"])
        seen.add(key)
        cur = current.get(key)
        now = None if cur is None else (cur[0] if math.isfinite(cur[0]) else None)
        base = None if r["value"] is None else float(r["value"])
        tol = tolerance(r["metric"], tolerances, base)
        if cur is None or not _close(base, now, tol):
            failures.append(Change(*key, base, now if cur is not None else None, tol))
    new = sorted(k for k in current if k not in seen)
    return Comparison(len(baseline["metrics"]), failures, new)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}" if 0 < abs(x) < 1 else f"{x:.2f}"


def diff_text(result: Comparison, baseline_path: Path, run_dir: Path) -> str:
    """A readable diff: one line per tracked metric that moved beyond its tolerance."""
    lines = []
    if result.ok:
        lines.append(f"OK: {result.checked} tracked metrics of {run_dir} are within tolerance of {baseline_path}")
    else:
        lines.append(f"FAIL: {len(result.failures)} of {result.checked} tracked metrics of {run_dir} moved beyond "
                     f"their tolerance (baseline {baseline_path})")
        w_m = max(len(c.method) for c in result.failures)
        w_e = max(len(c.eval_set) for c in result.failures)
        w_k = max(len(c.metric) for c in result.failures)
        for c in sorted(result.failures, key=lambda c: (c.method, c.eval_set, c.metric)):
            delta = "" if not math.isfinite(c.delta) else f"{c.delta:+.4g}"
            lines.append(f"  {c.method:<{w_m}}  {c.eval_set:<{w_e}}  {c.metric:<{w_k}}  {_fmt(c.baseline):>8} -> "
                         f"{_fmt(c.current):>8}  {delta:>9}  (tolerance ±{c.tolerance:g})  {c.verdict}")
        lines.append(f"If the change is intended, accept it: python -m bench compare {run_dir} --baseline "
                     f"{baseline_path} --update")
    if result.new:
        shown = ", ".join("/".join(k) for k in result.new[:5])
        more = f" and {len(result.new) - 5} more" if len(result.new) > 5 else ""
        lines.append(f"note: {len(result.new)} metrics are not in the baseline (not checked): {shown}{more}")
    return "\n".join(lines) + "\n"


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(baseline, indent=1, sort_keys=False) + "\n")
