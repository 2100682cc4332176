"""Command line: ``python -m bench COMMAND``. Every command is a module of bench/commands with the same two entry
points: ``add_parser(subparsers)``, which registers its parser with ``set_defaults(handler=fn)``, and the handler
``fn(args, out_console, err_console) -> exit code``. Errors are one line on stderr with a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from bench.errors import BenchError, UsageError

COMMAND_MODULES: tuple[str, ...] = ("bench.commands.listing", "bench.commands.run", "bench.commands.report",
                                     "bench.commands.compare", "bench.commands.transfer", "bench.commands.predict",
                                     "bench.commands.serve", "bench.commands.dadc", "bench.commands.score",
                                     "bench.commands.gallery", "bench.commands.uap_sweep",
                                     "bench.commands.rescore")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sub = " ".join(self.prog.split()[1:])
        raise UsageError(f"{message} (see python -m bench {sub + ' ' if sub else ''}--help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmark confidence methods on shared data, backbone and budget.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    out, err = Console(), Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "handler", None) is not None:
            return args.handler(args, out, err)
        build_parser().print_help()
        return 2
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a disk that filled up, a folder that vanished: one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}".splitlines()[0], file=sys.stderr)
        return 1
