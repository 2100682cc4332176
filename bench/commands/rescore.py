"""``bench rescore RUN --methods energy,maxlogit [--from msp]``: add post-hoc logit scorers to a finished run from
the logits its cells stored, without inference (bench/run/rescore.py); prints the new methods' summary tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rescore", help="add post-hoc logit scorers to a finished run from its stored logits")
    p.add_argument("run", type=Path, help="a run directory made by bench run")
    p.add_argument("--methods", required=True, help="post-hoc scorers that fit nothing, e.g. energy,maxlogit,entropy")
    p.add_argument("--from", dest="source", help="the method whose stored logits are read (default msp, else the "
                                                 "first method of the run that shares the baseline)")
    p.set_defaults(handler=run_rescore)


def run_rescore(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report.summary import summary_tables
    from bench.run.rescore import rescore
    from bench.run.store import RunStore

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    df = rescore(args.run, names, args.source)
    groups = (RunStore(args.run).read_manifest() or {}).get("eval_set_groups", {})
    rows = df.to_dict("records")
    if rows:
        for table in summary_tables(rows, groups):
            out.print(table)
    cells = len({(r["method"], r["seed"], r["fold"], r["eval_set"]) for r in rows})
    out.print(f"rescore: {cells} new cells in {args.run} (results: {args.run / 'results.csv'})", highlight=False,
              soft_wrap=True)
    return 0
