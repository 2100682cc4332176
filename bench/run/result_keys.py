"""Which keys of a resolved run config determine results: the one definition that resuming a run (run/provenance.py),
combining runs in one report (bench/report/runs.py) and comparing a run with a baseline (bench/report/gate.py) all use.

Plain names, no imports, so that reading runs does not load the methods; tests/test_result_keys.py checks that the
two lists below partition ``RunConfig``'s fields and that no checkpoint's cache key reads a placement key.
"""

from __future__ import annotations

from typing import Any

#: what a run computes: every top-level key but the placement keys (``method_options``: each method's own config)
RESULT_KEYS = ("profile", "benchmark", "methods", "backbone", "datasets", "ood", "train", "split", "eval", "folds",
               "seeds", "method_options", "data", "ood_resize")
#: result keys added after runs were first written, with the value a run without the key had: such a run is read
#: as having it (so it can still be resumed, reported with and compared to runs that record the key)
ADDED_LATER = {"benchmark": "mnist"}
#: keys of a config section added later, with the value a run without the key had (an older run's eval section has
#: no ``max_attack``: its attack sets were capped by ``max_eval`` alone, which ``max_attack`` 0 means; nor
#: ``conformal``: it stored no calibration outputs; nor ``compile``: its inference was eager)
ADDED_LATER_IN = {"eval": {"max_attack": 0, "conformal": False, "compile": "none"}}
#: where a run executes and which files it keeps, not what it computes: a run may be resumed, reported and compared
#: under other values (``save_features`` only adds arrays beside the predictions; no metric depends on it)
PLACEMENT_KEYS = ("device", "data_dir", "cache_dir", "executor", "save_features")
#: result keys that choose which cells a run holds rather than how a cell is computed: runs that differ in them may
#: be reported together (each cell once) or compared with a baseline (a missing cell fails, a new one is noted)
CELL_KEYS = ("methods", "datasets", "ood", "seeds")


def with_added(cfg: dict[str, Any]) -> dict[str, Any]:
    """A manifest's ``config`` with the keys added later filled in at the values a run without them had."""
    out = {**ADDED_LATER, **cfg}
    for section, added in ADDED_LATER_IN.items():
        if isinstance(out.get(section), dict):
            out[section] = {**added, **out[section]}
    return out


def result_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config (a manifest's ``config``) that determine results."""
    return {k: v for k, v in with_added(cfg).items() if k not in PLACEMENT_KEYS}
