"""``python -m bench report RUN [RUN ...]``: leaderboard tables (and plots) from finished runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bench.errors import UsageError


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UsageError("an empty list was given; use comma-separated names, e.g. --metrics accuracy,auroc")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="aggregate runs into leaderboard tables (md, LaTeX, CSV, HTML) and plots")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories made by `bench run`")
    p.add_argument("--format", choices=["md", "latex", "csv", "html"],
                   help="output format (default: from each --out suffix; md on the terminal)")
    p.add_argument("--out", type=Path, action="append", default=[], metavar="FILE",
                   help="write here instead of the terminal; repeat for several files (.md .tex .csv .html)")
    p.add_argument("--metrics", help="comma-separated metric names or wildcards (default: each group's own)")
    p.add_argument("--groups", help="comma-separated table groups or wildcards: id, occlusion, adversarial, "
                   "ood-near, ood-far, cost, ... (default: all present)")
    p.add_argument("--methods", help="comma-separated method names or wildcards, in row order (default: all)")
    p.add_argument("--ci", action="store_true", help="add 95%% percentile-bootstrap confidence intervals")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests (0.05)")
    p.add_argument("--allow-partial", action="store_true", help="report runs with missing cells")
    p.add_argument("--plots", nargs="?", const="", default=None, metavar="DIR",
                   help="also write PNG and PDF plots (default DIR: <first run>/plots)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.export import format_for, render
    from bench.report import build_tables, load_runs
    from bench.utils import atomic_write_text
    from bench.validate import check_file_writable, check_writable

    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha {args.alpha} must lie in (0, 1)")
    targets = [(path, args.format or format_for(path.suffix)) for path in args.out]
    for path in args.out:  # before the (slow) tables: a bad path is a one-line error, not a traceback after them
        check_file_writable(path, "--out")
    runs = load_runs(args.runs, allow_partial=args.allow_partial)
    tables = build_tables(runs, metrics=_names(args.metrics), methods=_names(args.methods), ci=args.ci,
                          alpha=args.alpha, groups=_names(args.groups))
    ids = ", ".join(runs.manifests)
    machines = "; ".join(runs.device_names)
    preamble = f"Runs: {ids}. Device: {machines}."
    texts = [(path, render(tables, fmt, preamble)) for path, fmt in targets]  # everything rendered before writing
    plot_dir = None
    if args.plots is not None:
        from bench.plots import check_available

        check_available()
        plot_dir = Path(args.plots) if args.plots else args.runs[0] / "plots"
        check_writable(plot_dir, "--plots")
    if not targets:
        sys.stdout.write(render(tables, args.format or "md", preamble))
    for path, text in texts:
        try:
            atomic_write_text(path, text)
        except OSError as e:
            raise UsageError(f"cannot write --out {path}: {e.strerror or e}") from None
        err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if plot_dir is not None:
        from bench.plots import write_plots

        for path in write_plots(runs, plot_dir, methods=_names(args.methods), groups=_names(args.groups)):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return 0
