"""docs/missingfeature.md's 3-seed table of every variant and protocol is what its per-seed list says: each cell's
means, gain mean ± std and smallest..largest seed gain are recomputed here from the listed per-seed accuracies
(which come from `python tools/pmnist_table.py RUN` on each run), so the table cannot drift from its data."""

from __future__ import annotations

import re
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs  # the README and docs stay true (tier: see tests/conftest.py)

DOC = Path(__file__).resolve().parents[1] / "docs" / "missingfeature.md"
SECTION = "## Every variant and protocol at 3 seeds"
SETS = ["unmodified", "horizontal cut", "vertical cut", "diagonal cut", "triple cut"]
#: the per-seed bullet's name -> the table's column header
COLUMNS = {"split `hybrid_nr`": "split, `hybrid_nr`", "split `hybrid_alt`": "split, `hybrid_alt`",
           "reference `hybrid`": "reference protocol, `hybrid`",
           "reference `hybrid_nr`": "reference protocol, `hybrid_nr`",
           "reference `hybrid_alt`": "reference protocol, `hybrid_alt`"}


def _section() -> str:
    return DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]


def _per_seed(text: str) -> dict[str, list[list[tuple[Decimal, Decimal]]]]:
    """bullet name -> per seed, per test set, (standard, inverted)."""
    out = {}
    for name, body in re.findall(r"^- (split `\w+`|reference `\w+`): (.*?)(?=^- |^\S|\Z)", text, flags=re.M | re.S):
        seeds = re.split(r"\bs\d ", " ".join(body.split()))[1:]
        out[name] = [[(Decimal(a), Decimal(b)) for a, b in re.findall(r"(\d+\.\d+)/(\d+\.\d+)", s)] for s in seeds]
    return out


def _fmt(x: Decimal, places: int, sign: bool = False) -> str:
    """Round half up (the listed values are exact decimals, so a gain such as 9.15 must not become 9.1 through
    binary floating point)."""
    q = x.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{q:+}" if sign else f"{q}"


def _cell(seeds: list[list[tuple[Decimal, Decimal]]], i: int) -> str:
    """One table cell, in exact decimal arithmetic on the listed two-decimal accuracies."""
    std = [s[i][0] for s in seeds]
    inv = [s[i][1] for s in seeds]
    gain = [b - a for a, b in zip(std, inv)]
    return (f"{_fmt(statistics.mean(std), 2)} -> {_fmt(statistics.mean(inv), 2)} "
            f"({_fmt(statistics.mean(gain), 2, sign=True)} ± {_fmt(statistics.stdev(gain), 2)}; "
            f"{_fmt(min(gain), 1, sign=True)}..{_fmt(max(gain), 1, sign=True)})")


def test_the_per_seed_list_has_three_seeds_of_five_sets_per_column():
    per_seed = _per_seed(_section())
    assert set(per_seed) == set(COLUMNS)
    for name, seeds in per_seed.items():
        assert len(seeds) == 3 and all(len(s) == len(SETS) for s in seeds), name


def test_every_cell_of_the_table_is_recomputed_from_the_per_seed_list():
    text = _section()
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {c[0]: c for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[1:])}
    assert list(rows) == SETS
    per_seed = _per_seed(text)
    for name, column in COLUMNS.items():
        j = header.index(column)
        for i, test_set in enumerate(SETS):
            assert rows[test_set][j] == _cell(per_seed[name], i), (column, test_set)
