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


def _page(text: str | None):
    from bench.report.latex import Page

    if text is None:
        return Page()
    try:
        column, full = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--tex-width {text!r}: give two widths in pt, e.g. --tex-width 234,487") from None
    if not 0 < column <= full:
        raise UsageError(f"--tex-width {text!r}: need 0 < COLUMN <= TEXT")
    return Page(column, full)


def _versus(args: argparse.Namespace, runs, targets, tables) -> str:
    """The --versus tables as Markdown ('' without the flag), computed before anything is written."""
    if args.versus is None:
        return ""
    if runs is None:
        raise UsageError("--versus needs the run directories (per-sample predictions); a report CSV holds only "
                         "aggregates")
    fmts = {fmt for _, fmt in targets} or {args.format or "md"}
    if fmts != {"md"}:
        raise UsageError("--versus is written in Markdown only; give --out FILE.md (or no --out)")
    if args.versus_boot < 2:
        raise UsageError(f"--versus-boot {args.versus_boot}: need at least 2 resamples")
    from bench.report.tables import select
    from bench.report.versus import to_markdown, versus

    present = list(dict.fromkeys(runs.rows["method"]))
    methods = select(_names(args.methods), present, "method") if args.methods else present
    shown = {(c.eval_set, c.metric) for t in tables for c in t.columns}  # --groups and --metrics apply
    result = versus(runs, args.versus, methods, n_boot=args.versus_boot, seed=args.versus_seed, alpha=args.alpha,
                    columns=shown)
    if not result.tables:
        raise UsageError("--versus: the report shows no AUROC column of the in-distribution or OOD tables (see "
                         "--groups and --metrics)")
    return "\n" + to_markdown(result)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="aggregate runs into leaderboard tables (md, LaTeX, CSV, HTML) and plots")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run directories made by `bench run`, or one report CSV (re-typeset without the runs)")
    p.add_argument("--format", choices=["md", "latex", "csv", "html"],
                   help="output format (default: from each --out suffix; md on the terminal)")
    p.add_argument("--out", type=Path, action="append", default=[], metavar="FILE",
                   help="write here instead of the terminal; repeat for several files (.md .tex .csv .html)")
    p.add_argument("--metrics", help="comma-separated metric names or wildcards (default: each group's own)")
    p.add_argument("--groups", help="comma-separated table groups or wildcards: id, occlusion, adversarial, "
                   "ood-near, ood-far, cost, ... (default: all present), and the views shown only when named: "
                   "failure, guarantees, coverage")
    p.add_argument("--methods", help="comma-separated method names or wildcards, in row order (default: all)")
    p.add_argument("--sets", help="comma-separated eval-set names or wildcards whose columns the tables keep, e.g. "
                   "mnist or 'ood:*' (default: all; cost rows are the set 'cost'; plots are not filtered)")
    p.add_argument("--ci", action="store_true", help="add 95%% percentile-bootstrap confidence intervals")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests (0.05)")
    p.add_argument("--versus", metavar="METHOD",
                   help="also test each method that shares METHOD's network (e.g. msp) against it image by image: "
                   "AUROC difference, 95%% CI and Holm p per ID/OOD set, from the runs' per-sample predictions "
                   "(Markdown output only; docs/statistics.md)")
    p.add_argument("--versus-boot", type=int, default=2000, metavar="B",
                   help="image resamples of the paired bootstrap behind --versus (2000)")
    p.add_argument("--versus-seed", type=int, default=0, metavar="S", help="seed of those resamples (0)")
    p.add_argument("--allow-partial", action="store_true", help="report runs with missing cells")
    p.add_argument("--plots", nargs="?", const="", default=None, metavar="DIR",
                   help="also write PNG and PDF plots (default DIR: <first run>/plots)")
    p.add_argument("--layout", choices=["auto", "group", "metrics", "sets", "severity"],
                   help="table layout: methods x metrics per eval set, methods x eval sets per metric, methods x "
                   "severity; auto picks per group; group = one wide table per group (default: auto for LaTeX, "
                   "group for Markdown/HTML)")
    p.add_argument("--preamble", type=Path, metavar="FILE",
                   help="LaTeX: write the packages the tables need and \\benchconventions (print it once, e.g. in "
                   "a footnote) to FILE, instead of a conventions note under the first table")
    p.add_argument("--tex-width", metavar="COLUMN,TEXT",
                   help="LaTeX width budget in pt: one-column tables up to COLUMN, table* up to TEXT, wider ones "
                   "split (default 234,487: 3.25 in and 6.75 in)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.report.export import format_for, render
    from bench.report.runs import load_runs
    from bench.report.tables import build_tables
    from bench.run.validate import check_file_writable, check_writable
    from bench.utils import atomic_write_text

    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha {args.alpha} must lie in (0, 1)")
    targets = [(path, args.format or format_for(path.suffix)) for path in args.out]
    for path in [*args.out, *([args.preamble] if args.preamble is not None else [])]:
        check_file_writable(path, "--out" if path != args.preamble else "--preamble")  # before the slow tables
    page = _page(args.tex_width)
    from_csv = [p for p in args.runs if p.suffix.lower() == ".csv"]
    if from_csv:
        from bench.report.from_csv import read_report_csv

        if len(args.runs) > 1:
            raise UsageError("give either run directories or one report CSV, not both or several CSVs")
        if args.plots is not None:
            raise UsageError(f"--plots needs the run directories (predictions); {from_csv[0]} holds only aggregates")
        tables = read_report_csv(from_csv[0], alpha=args.alpha, ci=args.ci, metrics=_names(args.metrics),
                                 methods=_names(args.methods), groups=_names(args.groups), sets=_names(args.sets))
        preamble = f"Tables of {from_csv[0].name} (a bench report CSV)."
    else:
        runs = load_runs(args.runs, allow_partial=args.allow_partial)
        tables = build_tables(runs, metrics=_names(args.metrics), methods=_names(args.methods), ci=args.ci,
                              alpha=args.alpha, groups=_names(args.groups), sets=_names(args.sets))
        ids = ", ".join(runs.manifests)
        machines = "; ".join(runs.device_names)
        preamble = f"Runs: {ids}. Device: {machines}."
    versus_md = _versus(args, runs if not from_csv else None, targets, tables)
    note = args.preamble is None
    texts = [(path, render(tables, fmt, preamble, args.layout, page, note) + (versus_md if fmt == "md" else ""))
             for path, fmt in targets]
    if args.preamble is not None:
        from bench.report.export import relayout_for
        from bench.report.latex import preamble_snippet

        texts.append((args.preamble, preamble_snippet(relayout_for(tables, "latex", args.layout))))
    # everything is rendered before anything is written
    plot_dir = None
    if args.plots is not None:
        from bench.report.plots import check_available

        check_available()
        plot_dir = Path(args.plots) if args.plots else args.runs[0] / "plots"
        check_writable(plot_dir, "--plots")
    if not targets:
        sys.stdout.write(render(tables, args.format or "md", preamble, args.layout, page, note) + versus_md)
    for path, text in texts:
        try:
            atomic_write_text(path, text)
        except OSError as e:
            raise UsageError(f"cannot write --out {path}: {e.strerror or e}") from None
        err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if plot_dir is not None:
        from bench.report.figures import write_plots

        for path in write_plots(runs, plot_dir, methods=_names(args.methods), groups=_names(args.groups)):
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return 0
