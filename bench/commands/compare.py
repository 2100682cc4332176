"""``python -m bench compare RUN --baseline FILE``: the regression gate (exit 1 when a tracked metric moved)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="check a run against a baseline; exit 1 when a metric moved beyond tolerance")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory made by `bench run`")
    p.add_argument("--baseline", type=Path, required=True, help="baseline JSON, e.g. results/baselines/smoke.json")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS",
                   help="tolerance of a metric in its own units (repeatable); '*=X' sets every metric not named in "
                        "another --tolerance, overriding their own (mean_confidence's is a fraction of its baseline)")
    p.add_argument("--update", action="store_true", help="write the run's values as the new baseline")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report.gate import (
        DEFAULT_TOLERANCES,
        check_config,
        check_tolerance_names,
        compare,
        diff_text,
        load_baseline,
        make_baseline,
        merged_tolerances,
        parse_tolerances,
        tracked_values,
        write_baseline,
    )
    from bench.report.runs import load_runs

    overrides = parse_tolerances(args.tolerance)
    runs = load_runs([args.run])
    known = {k[2] for k in tracked_values(runs)}
    if args.update:
        check_tolerance_names(overrides, known)
        old: dict[str, float] = {}
        if args.baseline.exists():  # keep the old baseline's own (non-default) tolerances
            try:
                old = {k: v for k, v in load_baseline(args.baseline).get("tolerances", {}).items()
                       if DEFAULT_TOLERANCES.get(k) != v}
            except UsageError:  # an unreadable or older-schema baseline is being replaced: keep no tolerances
                old = {}
        baseline = make_baseline(runs, merged_tolerances(old, overrides))
        try:
            write_baseline(args.baseline, baseline)
        except OSError as e:
            raise UsageError(f"cannot write --baseline {args.baseline}: {e.strerror or e}; choose another path") \
                from None
        err.print(f"wrote {args.baseline} ({len(baseline['metrics'])} tracked metrics from {args.run})",
                  highlight=False, soft_wrap=True)
        return 0
    baseline = load_baseline(args.baseline)
    check_tolerance_names(overrides, known | {r["metric"] for r in baseline["metrics"]})
    check_config(runs, baseline, args.baseline)
    result = compare(runs, baseline, overrides)
    sys.stdout.write(diff_text(result, args.baseline, args.run))
    return 0 if result.ok else 1
