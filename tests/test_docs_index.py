"""docs/index.md lists every page of docs/, and every relative link of the README, results/README.md and the docs
points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]


def test_the_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert {p for p in pages if f"({p})" not in index} == set()


@pytest.mark.parametrize("page", ["README.md", "results/README.md", *[f"docs/{p.name}" for p in
                                                                      (ROOT / "docs").glob("*.md")]])
def test_relative_links_resolve(page):
    text = (ROOT / page).read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (ROOT / page).parent / target.split("#", 1)[0]
        if not path.exists():
            broken.append(target)
    assert broken == [], f"{page}: {broken}"
