"""``python -m bench dadc retrain|rounds``: fine-tune a method on MNIST plus the examples people flagged on
``bench serve`` (a new round), and compare the rounds in a table (see docs/dadc.md)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.commands.args import add_device
from bench.errors import UsageError
from bench.utils import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dadc", help="dynamic adversarial data collection: retrain on flagged examples, compare rounds")
    dsub = p.add_subparsers(dest="dadc_command", required=True)
    r = dsub.add_parser("retrain", help="fine-tune a method on MNIST + the collected examples (a new round)")
    r.add_argument("--run", type=Path, required=True, help="the run served with bench serve")
    r.add_argument("--method", required=True, help="a method of the run (msp, mcdropout, energy, ...)")
    r.add_argument("--seed", type=int, help="which seed's model (default: the smallest fitted)")
    r.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    r.add_argument("--lr", type=float, help="learning rate (default: the run's x 0.1)")
    r.add_argument("--human-fraction", type=float, default=0.05,
                   help="oversample the collected examples to at least this share of each epoch (default 0.05)")
    add_device(r)
    r.set_defaults(handler=run_retrain)
    t = dsub.add_parser("rounds", help="table of rounds: accuracy on MNIST test and on the collected examples")
    t.add_argument("--run", type=Path, required=True, help="the run served with bench serve")
    t.add_argument("--method", help="only this method")
    t.add_argument("--max-eval", type=int, default=0, help="MNIST test images to score (default all 10k)")
    add_device(t)
    t.set_defaults(handler=run_rounds)


def run_retrain(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.dadc.rounds import retrain

    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    row = retrain(args.run, args.method, seed=args.seed, epochs=args.epochs, lr=args.lr,
                  human_fraction=args.human_fraction, device=resolve_device(args.device))
    out.print(f"{row['method']} round {row['round']}: fine-tuned {row['epochs']} epoch(s) at lr {row['lr']:g} on "
              f"{row['mnist_train']} MNIST images + {row['examples_used']} collected examples x {row['human_copies']} "
              f"copies; checkpoint {args.run / row['checkpoint']}", highlight=False, soft_wrap=True)
    return 0


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def run_rounds(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.dadc.rounds import round_table

    if args.max_eval < 0:  # a negative n would act as a Python slice from the end
        raise UsageError(f"--max-eval must be >= 0 (0 = all), got {args.max_eval}")
    rows = round_table(args.run, args.method, max_eval=args.max_eval, device=resolve_device(args.device))
    n = rows[0]["dadc_n"] if rows else 0
    table = Table(title=f"dadc rounds of {args.run} (accuracy %)", title_justify="left")
    for col in ("method", "round", "trained on", "MNIST test", f"dadc (n={n})", "unseen", "n unseen",
                "fooled/flagged", "model"):
        table.add_column(col, justify="left" if col in ("method", "model") else "right",
                         no_wrap=col in ("method", "model"))
    for r in rows:
        table.add_row(r["method"], str(r["round"]), str(r["trained_on"]), _pct(r["mnist_accuracy"]),
                      _pct(r["dadc_accuracy"]), _pct(r["unseen_accuracy"]), str(r["unseen_n"]),
                      f"{r['fooled']}/{r['flagged']}", r["model_key"])
    out.print(table)
    out.print("unseen: accuracy on the examples flagged after the round was trained (round 0: all); fooled / flagged: "
              "examples flagged while the round was served", highlight=False, soft_wrap=True)
    return 0
