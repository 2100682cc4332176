"""Config layering (profile < --config < flags < --set), type coercion and one-line errors."""

from __future__ import annotations

import pytest

from bench.config import load_profile, parse_set, profiles, resolve
from bench.errors import UsageError
from bench.methods import METHODS
from bench.registry import Registry

CONFIGS = {n: METHODS.get(n).Config for n in METHODS.names()}


def test_profiles_exist_and_resolve():
    assert {"smoke", "quick", "paper"} <= set(profiles())
    for name in profiles():
        cfg = resolve([load_profile(name)], CONFIGS)
        assert cfg.profile == name and cfg.train.epochs >= 1


def test_layers_override_in_order():
    cfg = resolve([load_profile("quick"), {"train": {"epochs": 2}}, {"seeds": [0, 1]},
                   parse_set(["train.epochs=3", "train.lr=1e-3", "mcdropout.passes=7"])], CONFIGS)
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001 and cfg.seeds == (0, 1)
    assert cfg.options_for("mcdropout")["passes"] == 7
    assert cfg.train.optimizer == "adam"  # untouched keys keep the profile's value


@pytest.mark.parametrize("layer, msg", [
    ({"train": {"epoch": 1}}, "unknown key train.epoch"),
    ({"nonsense": 1}, "unknown config key 'nonsense'"),
    ({"train": {"epochs": "many"}}, "train.epochs='many' is not a valid int"),
    ({"train": {"optimizer": "rmsprop"}}, "train.optimizer 'rmsprop' is not one of"),
    ({"mcdropout": {"variant": "x"}}, "mcdropout.variant 'x' is not one of"),
    ({"seeds": []}, "seeds is empty"),
    ({"train": 3}, "train must be a mapping"),
])
def test_bad_keys_and_values(layer, msg):
    with pytest.raises(UsageError, match=msg):
        resolve([load_profile("smoke"), layer], CONFIGS)


@pytest.mark.parametrize("item", ["train.epochs", "=3", "a..b=1", "a.b.c=1"])
def test_malformed_set(item):
    with pytest.raises(UsageError):
        parse_set([item])


def test_registry_manners():
    reg: Registry = Registry("thing")
    reg.add("alpha", object(), "first")
    with pytest.raises(ValueError, match="duplicate"):
        reg.add("alpha", object())
    with pytest.raises(UsageError, match=r"unknown thing 'alpah'; did you mean alpha\?"):
        reg.get("alpah")
    reg.add("beta", object(), "second")
    assert reg.names("a*") == ["alpha"] and reg.expand(["*a", "alpha"]) == ["alpha", "beta"]
    with pytest.raises(UsageError, match="no thing matches"):
        reg.expand(["z*"])


def test_every_method_module_registers_something():
    """methods/__init__.py is the table of contents: each method file in it must register a method. The template
    lives in methods/core/; beside the method files only a method's own networks (``*_nets.py``) may stand."""
    import pathlib

    import bench.methods as pkg

    files = {p.stem for p in pathlib.Path(pkg.__file__).parent.glob("*.py")} - {"__init__"}
    files = {f for f in files if not f.endswith("_nets")}
    registered = {METHODS.get(n).__module__.rsplit(".", 1)[-1] for n in METHODS.names()}
    assert files <= registered, f"method files that register nothing (or are not imported): {files - registered}"
    in_core = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("bench.methods.core")]
    assert not in_core, f"methods registered by the template (methods/core/) instead of a method file: {in_core}"
