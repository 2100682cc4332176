"""What a gallery reads from a run directory: its rows, saved predictions and manifest, and its fitted methods
grouped by network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.datasets.evalsets import EvalContext
from bench.errors import BenchError, UsageError
from bench.gallery.config import GalleryConfig
from bench.gallery.names import close_match
from bench.run.store import RunStore, cell_key


@dataclass
class Network:
    """One attacked network and the methods that share it (msp and its post-hoc scorers)."""

    label: str
    methods: list[str]
    method: Any  # the first method, fitted (its ``classifier`` is attacked, its ``predict`` scores)


class RunView:
    """What a gallery reads from a run directory: rows, saved predictions, manifest, fitted methods."""

    def __init__(self, run_dir: Path, cfg: GalleryConfig):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise UsageError(f"run directory {self.dir} does not exist")
        store = RunStore(self.dir)
        self.manifest = store.read_manifest()
        if self.manifest is None:
            raise UsageError(f"{self.dir} is not a run directory (no manifest.json); give a directory made by "
                             "`bench run`")
        rows = store.rows() if store.has_results() else []
        if not rows:
            raise UsageError(f"{self.dir} has no finished cells; run it first (python -m bench run ... --out "
                             f"{self.dir})")
        seeds = sorted({int(r["seed"]) for r in rows if int(r["fold"]) == cfg.fold})
        if not seeds:
            raise UsageError(f"run {self.dir} has no cells of fold {cfg.fold}")
        if cfg.seed is not None and cfg.seed not in seeds:
            raise UsageError(f"run {self.dir} has no seed {cfg.seed} (it has: {', '.join(map(str, seeds))})")
        self.seed, self.fold = (cfg.seed if cfg.seed is not None else seeds[0]), cfg.fold
        mine = [r for r in rows if int(r["seed"]) == self.seed and int(r["fold"]) == self.fold]
        self.rows = mine
        listed = [m for m in self.manifest.get("config", {}).get("methods", []) if "*" not in m]
        have = set(r["method"] for r in mine)  # in the run's --methods order, then any other (wildcard runs)
        all_methods = [m for m in listed if m in have] + sorted(have - set(listed))
        all_sets = list(dict.fromkeys(r["eval_set"] for r in mine if r["eval_set"] != "cost"))
        self.methods = self._choose(cfg.methods, all_methods, "method")
        self.eval_sets = self._choose(cfg.datasets, all_sets, "eval set")
        config = self.manifest.get("config", {})
        cache_dir = config.get("cache_dir") or "results/cache"
        self.ctx_args = {"data_dir": Path(config.get("data_dir") or "data"), "allow_download": False,
                         "cache_dir": Path(cache_dir), "device": torch.device(cfg.device)}
        self.max_eval = int(config.get("eval", {}).get("max_eval", 0) or 0)
        self.max_attack = int(config.get("eval", {}).get("max_attack", 0) or 0)
        self.device = torch.device(cfg.device)
        self._fitted: dict[str, Any] = {}
        self._data: dict = {}  # embedded data sets, loaded once
        self._networks: list[Network] | None = None
        self.load_errors: dict[str, str] = {}

    def _choose(self, wanted: tuple[str, ...], have: list[str], what: str) -> list[str]:
        if not wanted:
            return have
        for name in wanted:
            if name not in have:
                raise UsageError(f"{what} {name!r} is not in run {self.dir} (seed {self.seed}); "
                                 f"{close_match(name, have)}it has: {', '.join(have)}")
        return list(dict.fromkeys(wanted))

    def context(self, max_eval: int | None = None) -> EvalContext:
        """An eval context like the run's (its cap unless ``max_eval``); all share one cache of embedded data."""
        return EvalContext(max_eval=self.max_eval if max_eval is None else max_eval, max_attack=self.max_attack,
                           _cache=self._data, **self.ctx_args)

    def saved(self, method: str, eval_set: str) -> dict[str, np.ndarray] | None:
        path = self.dir / "predictions" / f"{cell_key(method, self.seed, self.fold, eval_set)}.npz"
        if not path.exists():
            return None
        from bench.run.store import read_predictions

        return read_predictions(path)

    def metric(self, method: str, eval_set: str, metric: str) -> float | None:
        for r in self.rows:
            if r["method"] == method and r["eval_set"] == eval_set and r["metric"] == metric:
                return float(r["value"])
        return None

    def method(self, name: str) -> Any | None:
        """The fitted method from the run's checkpoints (None, with the reason in ``load_errors``, when its
        checkpoint is missing)."""
        if name not in self._fitted and name not in self.load_errors:
            from bench.run.loading import load_method

            try:
                self._fitted[name] = load_method(self.dir, name, self.seed, self.fold, self.device)
            except BenchError as e:
                self.load_errors[name] = str(e)
        return self._fitted.get(name)

    def networks(self) -> list[Network]:
        """The selected methods grouped by network (content hash of the attacked classifier)."""
        if self._networks is None:
            from bench.datasets.uap import model_hash

            groups: dict[str, Network] = {}
            for name in self.methods:
                m = self.method(name)
                if m is None:
                    continue
                h = model_hash(m.classifier)
                if h in groups:
                    groups[h].methods.append(name)
                else:
                    groups[h] = Network(name, [name], m)
            for net in groups.values():
                if len(net.methods) > 1:
                    net.label = f"{net.methods[0]} (= {', '.join(net.methods[1:])})"
            self._networks = list(groups.values())
        return self._networks
