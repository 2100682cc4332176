"""docs/adding-a-method.md's example is real code: this test loads the very ``python`` block of the page, registers
it (in a copy of the registry, undone afterwards) and runs it through every contract check."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from test_contract import checks_for, run_contract

from bench.methods import METHODS
from bench.methods.core.base import Training

pytestmark = pytest.mark.contract  # the shared contract suite (tier: see tests/conftest.py)

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"


def example_code() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    [code] = [b for b in blocks if "@register(" in b]
    return code


def test_the_documented_method_passes_the_contract_suite(tiny, cached_tiny_ctx, monkeypatch):
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_docs", dict(METHODS._docs))
    module = types.ModuleType("adding_a_method_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(example_code(), str(DOC), "exec"), module.__dict__)
    cls = METHODS.get("labelsmooth")
    assert cls.__module__ == module.__name__ and cls.training is Training.OWN
    assert {"outputs", "direction", "determinism", "round_trip"} <= set(checks_for("labelsmooth"))
    log = run_contract("labelsmooth", tiny, cached_tiny_ctx)("labelsmooth").train_log
    assert len(log.extra["train_mcp"]) == len(log.losses) == cached_tiny_ctx.recipe.epochs  # the step's series
