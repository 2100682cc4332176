"""The run config of a command that fits methods with a profile's recipe outside ``bench run`` (transfer,
uap-sweep): its --profile, --set, --device and --cache-dir flags, and the RunConfig they resolve to, built the same
way for every such command (profile, then the two flags, then --set; every key checked as ``bench run`` checks it)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import RunConfig


def add_config_flags(p: argparse.ArgumentParser, cache_help: str = "checkpoint cache (default results/cache)") -> None:
    from bench.commands.args import add_device, profile_help

    p.add_argument("--profile", default="quick", help=f"training recipe and split: {profile_help()}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    add_device(p, default=None)
    p.add_argument("--cache-dir", help=cache_help)


def method_configs() -> dict[str, type]:
    """Every registered method's Config dataclass by name, so that ``--set <method>.<option>`` is checked."""
    from bench.methods import METHODS

    return {name: METHODS.get(name).Config for name in METHODS.names()}


def config_from_flags(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``args.profile`` with ``--cache-dir`` and ``--device`` (when given) and ``--set`` over it;
    an unknown profile, a malformed --set or an unknown key raises UsageError (one line, before any work)."""
    from bench.config import load_profile, parse_set, resolve

    flags = {key: value for key, value in (("cache_dir", args.cache_dir), ("device", args.device)) if value}
    return resolve([load_profile(args.profile), flags, parse_set(args.set)], method_configs())
