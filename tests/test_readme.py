"""The README stays true: its test command is what CI runs, and every registered method is documented."""

from __future__ import annotations

import re
from pathlib import Path

from bench.methods import METHODS

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


def test_every_registered_method_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_-]+)` \|", readme, flags=re.M))
    assert set(METHODS.names()) <= documented, f"undocumented methods: {set(METHODS.names()) - documented}"
