"""Synthetic run directories for the report and compare tests: the layout ``bench run`` writes (manifest, cells,
predictions), with values chosen by hand so that every aggregate can be checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.run.store import RunStore, cell_key

SEEDS = (0, 1, 2)
# Per-seed values (seed order 0, 1, 2), checked by hand in the tests.
ID_ACC = {"alpha": [90.0, 91.0, 92.0], "beta": [89.0, 90.5, 91.0], "gamma": [80.0, 81.0, 82.0]}
ID_AUROC = {"alpha": [70.0, 72.0, 74.0], "beta": [75.0, 75.0, 75.0], "gamma": [60.0, 61.0, 65.0]}
ID_ECE = {"alpha": [5.0, 6.0, 7.0], "beta": [2.0, 3.0, 4.0], "gamma": [9.0, 9.0, 9.0]}
OOD = {"ood:fashion": ("near", {"alpha": 90.0, "beta": 85.0, "gamma": 60.0}),
       "ood:uniform": ("far", {"alpha": 99.0, "beta": 97.0, "gamma": 50.0})}
FGSM_ACC = {"fgsm:eps=0.1": {"alpha": 40.0, "beta": 50.0, "gamma": 20.0},
            "fgsm:eps=0.3": {"alpha": 10.0, "beta": 15.0, "gamma": 5.0}}


def manifest(run_id: str, methods: list[str], seeds: tuple[int, ...], epochs: int = 1,
             datasets: list[str] | None = None) -> dict[str, Any]:
    sets = datasets if datasets is not None else ["mnist", *OOD, *FGSM_ACC]
    return {"run_id": run_id, "device_name": "cpu (test)", "git_sha": "test", "command": ["bench", "run"],
            "versions": {}, "eval_set_groups": {s: ({"group": OOD[s][0]} if s in OOD else {}) for s in sets},
            "config": {"profile": "smoke", "backbone": "lenet", "methods": methods, "datasets": sets,
                       "seeds": list(seeds), "folds": 1, "device": "cpu", "train": {"epochs": epochs},
                       "split": {"val_fraction": 0.1}, "eval": {"max_eval": 100}, "method_options": {}}}


def write_run(root: Path, name: str = "run-a", methods: tuple[str, ...] = ("alpha", "beta", "gamma"),
              seeds: tuple[int, ...] = SEEDS, epochs: int = 1, skip: tuple[str, ...] = (),
              predictions: bool = False) -> Path:
    """A finished run of the hand-chosen values above; ``skip`` leaves out cells (by cell key) to make it
    partial."""
    store = RunStore(root / name)
    store.ensure_writable()
    store.write_manifest(manifest(name, list(methods), seeds, epochs))
    rng = np.random.default_rng(0)
    for m in methods:
        for s in seeds:
            i = SEEDS.index(s)
            base = {"run_id": name, "method": m, "backbone": "lenet", "seed": s, "fold": 0}
            cells: dict[str, tuple[str, str, dict[str, float]]] = {
                "mnist": ("none", "", {"accuracy": ID_ACC[m][i], "auroc": ID_AUROC[m][i], "ece": ID_ECE[m][i]}),
                "cost": ("cost", "", {"sec_per_epoch": 1.0 + i, "params": 1000.0}),
            }
            for ds, (_, vals) in OOD.items():
                cells[ds] = ("ood", "", {"ood_auroc": vals[m] + i, "ood_fpr95": 100.0 - vals[m]})
            for ds, vals in FGSM_ACC.items():
                cells[ds] = ("fgsm", ds.split("=")[1], {"accuracy": vals[m] + i, "auroc": 55.0 + i})
            for ds, (shift, sev, vals) in cells.items():
                key = cell_key(m, s, 0, ds)
                if key in skip:
                    continue
                rows = [{**base, "eval_set": ds, "shift": shift, "severity": sev, "metric": k, "value": v}
                        for k, v in vals.items()]
                arrays = None
                if predictions and ds != "cost":
                    logits = rng.normal(size=(50, 10)) * 3
                    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                    labels = rng.integers(0, 10, 50) if ds == "mnist" or ds.startswith("fgsm") else -np.ones(50, int)
                    arrays = {"probs": probs.astype(np.float32), "confidence": probs.max(1).astype(np.float32),
                              "labels": labels}
                store.write_cell(key, rows, arrays)
    store.write_results_csv()
    return store.dir


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
