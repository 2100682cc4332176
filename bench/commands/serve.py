"""``python -m bench serve --run RUN [--port 7860]``: the dynamic adversarial data collection page (see docs/dadc.md).
Serves every method fitted in the run (its latest dadc round by default) on 127.0.0.1; flagged examples go to
``RUN/dadc.sqlite``. Needs the ``dadc`` extra (gradio)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from rich.console import Console

from bench.commands.args import add_device
from bench.errors import UsageError
from bench.utils import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page where people draw digits to fool the run's methods (needs gradio)")
    p.add_argument("--run", type=Path, required=True, help="a finished run directory (from bench run --out)")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--round", default="latest", help="dadc round to serve: latest (default) | 0 (the run's own) | N")
    p.add_argument("--seed", type=int, help="which seed's models (default: the smallest fitted)")
    add_device(p)
    p.set_defaults(handler=run_serve)


def parse_round(text: str) -> int | str:
    if text == "latest":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"--round {text!r} is not latest or a round number >= 0")
    return value


def run_serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    # flags first, so that a bad value is reported the same way with or without gradio installed
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number (1-65535)")
    if not args.run.is_dir():
        raise UsageError(f"--run {args.run} is not a directory")
    round_ = parse_round(args.round)
    if importlib.util.find_spec("gradio") is None:
        raise UsageError("bench serve needs gradio: pip install -e '.[dadc]'")
    from bench.dadc.app import Oracle, launch
    from bench.dadc.rounds import served_methods

    served = served_methods(args.run, round_, seed=args.seed, device=resolve_device(args.device))
    err.print(f"serving {', '.join(f'{s.method} (round {s.round})' for s in served)} of {args.run} on "
              f"http://127.0.0.1:{args.port}  (examples go to {args.run / 'dadc.sqlite'}; Ctrl+C stops)",
              highlight=False, soft_wrap=True)
    try:
        launch(Oracle(args.run, served), args.port)
    except OSError as e:
        raise UsageError(f"cannot serve on 127.0.0.1:{args.port} ({e.strerror or e}); choose another --port") from None
    return 0
