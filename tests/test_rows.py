"""The one row constructor (bench/run/rows.py ``tidy``): every writer of tidy rows goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.run.rows import CELL_FIELDS, tidy
from bench.run.store import ROW_FIELDS

ROOT = Path(__file__).resolve().parents[1]
CELL = {"run_id": "r1", "method": "msp", "backbone": "lenet", "seed": "2", "fold": 0, "eval_set": "mnist",
        "shift": "none", "severity": ""}


def test_tidy_gives_rows_with_every_field_in_order_and_types_fixed():
    rows = tidy({"accuracy": 98, "ece": 0.5}, CELL)
    assert [list(r) for r in rows] == [list(ROW_FIELDS)] * 2
    assert rows[0]["seed"] == 2 and isinstance(rows[0]["value"], float) and rows[1]["metric"] == "ece"


@pytest.mark.parametrize("base", [{k: v for k, v in CELL.items() if k != "severity"}, {**CELL, "group": "near"}])
def test_tidy_refuses_a_cell_named_by_other_fields(base):
    with pytest.raises(ValueError, match="a row's cell is named by"):
        tidy({"accuracy": 1.0}, base)


def test_no_writer_builds_rows_by_hand():
    """A row is built only by ``tidy``: no other module writes a ``"metric": ...`` entry into a row of a cell (the
    gate's baseline file, bench/report/gate.py, has a schema of its own: method, eval set, metric, value, n)."""
    assert CELL_FIELDS == ROW_FIELDS[:-2]
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("bench", "methods", "datasets")
             for p in sorted((ROOT / folder).rglob("*.py")) if p.name not in ("rows.py", "gate.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"""["']metric["']\s*:""", line)]
    assert found == []
