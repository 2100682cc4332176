"""The README stays true: its test command is what CI runs, and every registered method is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.methods import METHODS

pytestmark = pytest.mark.docs  # the README and docs stay true (tier: see tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)
    assert len(commands) == 2, "README shows two fresh-machine commands (main job, tests)"
    test_cmd = next(c for c in commands if "pytest" in c)
    for step in test_cmd.split(" && "):
        step = step.replace("pip install", "python -m pip install -q") if step.startswith("pip ") else step
        assert step in ci, f"README step {step!r} is not in .ci/run"


def test_the_readme_test_command_runs_the_slow_tests():
    """CI runs ``python -m pytest -q``; the ``slow`` marker is only for ``-m "not slow"`` by hand, so the default
    options must not deselect it."""
    text = (ROOT / "pyproject.toml").read_text()
    [addopts] = re.findall(r"^addopts = (.*)$", text, flags=re.M)
    assert "slow" not in addopts and "-m" not in addopts.replace('"', " ").split()


def test_every_registered_method_is_in_the_methods_table():
    readme = (ROOT / "docs" / "methods.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_-]+)` \|", readme, flags=re.M))
    assert set(METHODS.names()) <= documented, f"undocumented methods: {set(METHODS.names()) - documented}"


def _leaderboard_tables(readme: str, section: str = "# Leaderboard") -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every Markdown table of a section of results/README.md (the MNIST leaderboard: up to
    its first "## "; a "## " section: up to the next)."""
    section = readme.split(section, 1)[1].split("\n## ", 1)[0]
    out = []
    for block in section.split("\n#### ")[1:]:
        title, lines = block.split("\n", 1)[0], [ln for ln in block.splitlines() if ln.startswith("| ")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        out.append((title, cells[0], cells[1:]))
    return out


@pytest.mark.parametrize(("section", "folder", "titles"), [
    ("# Leaderboard", "results", ["Cost", "In-distribution:", "Near"]),
    ("## The Fashion-MNIST world", "results/fashion", ["In-distribution:", "Near"]),
])
def test_readme_leaderboard_numbers_come_from_the_committed_results(section, folder, titles):
    """Every number in the README's leaderboard and cost tables (MNIST's, then Fashion-MNIST's) is the committed CSV's
    value, rounded as the report renders it: the tables are pasted tool output, not typed in."""
    import pandas as pd

    from bench.report.groups import GROUPS
    from bench.report.layout import set_labels
    from bench.report.metric_facts import METRICS

    readme = (ROOT / "results" / "README.md").read_text()
    tables = _leaderboard_tables(readme, section)
    where = {"In-distribution": ("id", "leaderboard.csv"), "Near OOD": ("ood-near", "leaderboard.csv"),
             "Cost": ("cost", "cost.csv")}
    assert sorted(t[0].split(" ")[0] for t in tables) == titles
    checked = 0
    for title, header, rows in tables:
        group, csv_name = next(v for k, v in where.items() if title.startswith(k))
        csv = pd.read_csv(ROOT / folder / csv_name)
        csv = csv[csv["group"] == group]
        sets = list(dict.fromkeys(csv["eval_set"]))
        # a column is "LABEL" (one eval set) or "SET LABEL" (several side by side, e.g. "notmnist AUROC", "mean AUROC")
        columns = {METRICS[m].label: (sets[0], m) for m in GROUPS[group][1]} if len(sets) == 1 else {
            f"{short} {METRICS[m].label}": (ds, m) for ds, short in set_labels(sets).items() for m in GROUPS[group][1]}
        for row in rows:
            method = row[0]
            for label, cell in zip(header[1:], row[1:]):
                eval_set, metric = columns[label.rstrip(" ↑↓")]
                hit = csv[(csv["method"] == method) & (csv["metric"] == metric) & (csv["eval_set"] == eval_set)]
                assert len(hit) == 1, (method, eval_set, metric)
                digits = METRICS[metric].digits
                shown = cell.replace("*", "").replace("†", "").replace(",", "").split("±")
                assert float(shown[0]) == round(float(hit["mean"].iloc[0]), digits), (method, metric, cell)
                if len(shown) == 2:
                    assert float(shown[1]) == round(float(hit["std"].iloc[0]), digits), (method, metric, cell)
                checked += 1
    assert checked >= 15 * (6 + 6)
