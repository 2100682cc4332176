"""``python -m bench gallery RUN --out DIR``: pictures of what the models see (bench/gallery/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bench.commands.args import add_device
from bench.errors import UsageError

# bench.gallery.SECTIONS, repeated here so that building the parser does not import torch (a test checks they agree)
SECTIONS = ("samples", "attacks", "targeted", "uap", "fooling", "trustgan", "dadc")


def _names(text: str | None, flag: str) -> tuple[str, ...]:
    from bench.commands.args import (
        split_sets as _split_sets,  # eval-set names carry commas (uap:xi=0.2,p=inf): the run's own splitter
    )

    if text is None:
        return ()
    names = tuple(_split_sets(text))
    if not names:
        raise UsageError(f"{flag} was given an empty list; use comma-separated names")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gallery", help="image grids of a run: eval-set samples with predictions, attacks and "
                       "perturbations, universal perturbations, fooling images, TrustGAN samples, DADC examples")
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory made by `bench run`")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the PNG and PDF files go (default RUN/gallery)")
    p.add_argument("--methods", help="comma-separated methods of the run, in row order (default: all)")
    p.add_argument("--datasets", help="comma-separated eval sets of the run (default: all)")
    p.add_argument("--sections", help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--seed", type=int, help="which seed's models and predictions (default: the smallest)")
    p.add_argument("--fold", type=int, default=0, help="which fold (default 0)")
    p.add_argument("--digits", type=int, default=4, help="white-box panels: how many digits (default 4)")
    p.add_argument("--target-index", type=int, default=0,
                   help="targeted PGD: the MNIST test image attacked towards each class (default 0, a 7)")
    p.add_argument("--targeted-eps", type=float, default=0.0,
                   help="targeted PGD radius (default: the run's largest L-inf attack radius, else 0.3)")
    p.add_argument("--targeted-steps", type=int, default=40, help="targeted PGD steps (default 40)")
    p.add_argument("--judge", default="", metavar="METHOD",
                   help="a method of the run whose network labels the other networks' targeted results")
    p.add_argument("--judge-images", type=int, default=50, help="test images for the judge's count (default 50)")
    add_device(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.gallery import GalleryConfig, make_gallery
    from bench.utils import resolve_device

    cfg = GalleryConfig(methods=_names(args.methods, "--methods"), datasets=_names(args.datasets, "--datasets"),
                        sections=_names(args.sections, "--sections") or SECTIONS, seed=args.seed, fold=args.fold,
                        digits=args.digits, target_index=args.target_index, targeted_eps=args.targeted_eps,
                        targeted_steps=args.targeted_steps, judge=args.judge, judge_images=args.judge_images,
                        device=str(resolve_device(args.device)))
    res = make_gallery(args.run, args.out or args.run / "gallery", cfg,
                       log=lambda s: err.print(s, highlight=False, soft_wrap=True))
    for note in res.notes:
        out.print(note, highlight=False, soft_wrap=True)
    for line in res.skipped:
        err.print(f"skipped {line}", highlight=False, soft_wrap=True)
    err.print(f"gallery: {len(res.written)} files in {res.seconds:.1f} s, {len(res.skipped)} parts skipped",
              highlight=False, soft_wrap=True)
    if not res.written:
        err.print("[red]error[/red] nothing could be drawn from this run (see the skipped lines above)",
                  highlight=False, soft_wrap=True)
        return 1
    return 0
