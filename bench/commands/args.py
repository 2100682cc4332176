"""Argument helpers every command shares: list splitting, seeds, ``--jobs``, ``--device`` and ``--profile`` (their
help generated from what is registered), so that a flag reads and fails the same way in every command."""

from __future__ import annotations

import argparse

from bench.errors import UsageError

DEVICE_HELP = "auto (CUDA if present, default) | cpu | cuda | cuda:N"


def split_names(text: str) -> list[str]:
    """``a, b,,c`` -> ``[a, b, c]``."""
    return [s.strip() for s in text.split(",") if s.strip()]


def split_sets(text: str) -> list[str]:
    """Like ``split_names``, but a fragment that is only ``key=value`` continues the previous parametrised set:
    ``uap:xi=0.2,p=inf,mnist`` -> ``uap:xi=0.2,p=inf`` and ``mnist``."""
    out: list[str] = []
    for part in split_names(text):
        if out and "=" in part and ":" not in part and ":" in out[-1]:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise UsageError(f"--seeds {text!r} is malformed; use comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise UsageError("--seeds is empty; use comma-separated integers, e.g. --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} repeats a seed")
    return seeds


def jobs(text: str) -> int:
    """``--jobs``: a number of worker processes, or ``auto`` (0 in the config)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --jobs value: {text!r}; give a number or auto") from None


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device``, auto by default in every command (``bench run`` leaves it to the profile, also auto)."""
    p.add_argument("--device", default=default, help=DEVICE_HELP)


def profile_help(default: str = "quick") -> str:
    from bench.config import profiles

    return f"{' | '.join(profiles())} (default {default}; python -m bench list profiles)"
