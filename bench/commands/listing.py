"""``python -m bench list [methods|backbones|datasets|benchmarks|profiles] [PATTERN]``: what is registered."""

from __future__ import annotations

import argparse

from rich.console import Console

from bench.errors import UsageError

KINDS = ("methods", "backbones", "datasets", "benchmarks", "profiles")


def add_parser(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("list", help="list registered methods, backbones, eval sets, benchmarks or profiles")
    ls.add_argument("kind", nargs="?", default="methods",
                    choices=KINDS)
    ls.add_argument("pattern", nargs="?", default=None, help="wildcard filter, e.g. 'ood:*'")

    ls.set_defaults(handler=list_command)


def list_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.config import PROFILE_DIR, profiles
    from bench.datasets.evalsets import EVAL_SETS
    from bench.methods import BACKBONES, METHODS

    if args.kind == "benchmarks":
        from bench.datasets.benchmarks import BENCHMARKS

        for name in BENCHMARKS.names(args.pattern):
            b = BENCHMARKS.get(name)
            out.print(f"[bold]{name:<12}[/bold] {b.description} (profile {b.profile})", soft_wrap=True,
                      highlight=False)
            for group, sets in b.groups:
                out.print(f"  {group:<12} {', '.join(sets)}", soft_wrap=True, highlight=False)
        return 0
    if args.kind == "profiles":
        for name in profiles():
            first = (PROFILE_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            out.print(f"[bold]{name:<12}[/bold] {first}", soft_wrap=True, highlight=False)
        return 0
    reg = {"methods": METHODS, "backbones": BACKBONES, "datasets": EVAL_SETS}[args.kind]
    names = reg.names(args.pattern)
    for name in names:
        spec = reg.get(name)
        extra = ("" if args.kind != "datasets" or spec.offline else
                 "  (downloads when online)" if spec.downloads else "  (from --data-dir)")
        out.print(f"[bold]{name:<22}[/bold] {reg.describe(name)}{extra}", highlight=False, soft_wrap=True)
    if args.kind == "backbones" and (args.pattern is None or args.pattern.startswith("timm")):
        out.print(f"[bold]{'timm:<name>':<22}[/bold] any timm model, built with one input channel", highlight=False)
    if not names and args.kind != "backbones":
        raise UsageError(f"no {args.kind} match {args.pattern!r}")
    return 0
