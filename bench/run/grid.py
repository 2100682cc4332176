"""Planning a run's grid: the units it is cut into, the cells each holds, and the checks before any training.

The methods that share one trained baseline network (``msp``, ``mcdropout`` and the post-hoc scorers) form one unit
per (fold, seed, backbone), so their logits and attacked eval sets are computed once; every other method is a unit
of its own. A unit's cells are its methods times the run's eval sets plus the ``cost`` pseudo-set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.datasets.source import DataSource
from bench.datasets.splits import smallest_train_size
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, Training
from bench.run.store import RunStore
from bench.utils import to_jsonable

COST_SET = "cost"
CAL_SET = "calibration"  # pseudo-set: the validation split's outputs, for conformal calibration (eval.conformal)


@dataclass(frozen=True)
class Unit:
    """One schedulable piece of the grid: ``methods`` fitted and evaluated for one (fold, seed)."""

    fold: int
    seed: int
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{'+'.join(self.methods)} seed {self.seed} fold {self.fold}"

    @property
    def marker(self) -> str:
        """File name prefix of the unit's in-flight marker in ``<run>/.running`` (progress of remote workers)."""
        return f"fold{self.fold}__seed{self.seed}__{'+'.join(self.methods)}"


@dataclass
class UnitResult:
    """What a unit hands back to the driver (its cells are already on disk)."""

    unit: Unit
    cells_done: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[tuple[str, int, int, str, str]] = field(default_factory=list)  # method, seed, fold, key, path
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval set -> shift family, group, severity


def failed_result(unit: Unit, message: str) -> UnitResult:
    """Error rows for every method of a unit that did not come back (its worker died, or the unit crashed outside
    a method)."""
    return UnitResult(unit, errors=[{"method": m, "seed": unit.seed, "fold": unit.fold, "error": message}
                                    for m in unit.methods])


def shares_baseline(cls: type[ConfidenceMethod]) -> bool:
    """Methods whose network is the plain cached baseline: post-hoc scorers and those that keep the default
    ``_fit`` (msp, mcdropout, energy, maxlogit, entropy, temperature)."""
    return cls.training is Training.SHARED_BASELINE


def plan_units(cfg: RunConfig, methods: list[str]) -> list[Unit]:
    """The grid's units, in run order: per fold and seed, the baseline-sharing methods together (one unit per
    backbone they use) and each other method alone, in the order of ``methods``."""
    units: list[Unit] = []
    for fold in range(cfg.folds):
        for seed in cfg.seeds:
            groups: dict[str, list[str]] = {}
            for m in methods:
                cls = METHODS.get(m)
                if shares_baseline(cls):
                    backbone = getattr(cls.Config(**cfg.options_for(m)), "backbone", "") or cfg.backbone
                    groups.setdefault(f"baseline:{backbone}", []).append(m)
                else:
                    groups[m] = [m]
            units.extend(Unit(fold, seed, tuple(ms)) for ms in groups.values())
    return units


def heaviest_first(units: list[Unit]) -> list[Unit]:
    """Units ordered for parallel workers: the heaviest first, ties in plan order. A unit weighs its heaviest
    method's ``grid_weight`` (the methods of a shared-baseline unit train one network between them). Longest-first
    keeps one long unit from running alone at the end of the grid."""
    def weight(unit: Unit) -> float:
        return max(METHODS.get(m).grid_weight for m in unit.methods)
    return sorted(units, key=weight, reverse=True)


def preflight(cfg: RunConfig, methods: list[str], source: DataSource,
              nets: Callable[[str, Any], list[nn.Module]] | None = None) -> dict[str, dict[str, Any]]:
    """Each method's checks that need its network or the training-split size (k-NN's k, a backbone without
    penultimate features), run before any training; returns the hyper-parameters each method will use.
    ``nets(method, config)`` gives the networks to check (default: an untrained backbone of the run's, built for
    the data's shape)."""
    n_all = source.n_train
    n_train = smallest_train_size(n_all, cfg.folds, cfg.split.val_fraction, cfg.split.max_train)
    out = {}
    for m in methods:
        cls = METHODS.get(m)
        config = cls.Config(**cfg.options_for(m))
        for net in (nets or _untrained_backbone(cfg, source))(m, config):
            out[m] = to_jsonable(cls.preflight(config, net, n_train))
    return out


def check_methods_eval_sets(cfg: RunConfig, methods: list[str], datasets: list[str]) -> None:
    """Each method's checks of its options against the run's eval sets and data folder (before any training)."""
    for m in methods:
        cls = METHODS.get(m)
        cls.check_eval_sets(cls.Config(**cfg.options_for(m)), list(datasets), Path(cfg.data_dir))


def _untrained_backbone(cfg: RunConfig, source: DataSource) -> Callable[[str, Any], list[nn.Module]]:
    return lambda method, config: [create_backbone(getattr(config, "backbone", "") or cfg.backbone,
                                                   source.num_classes, shape=source.shape)]


def eval_names(datasets: list[str], conformal: bool = False) -> list[str]:
    """A unit's cells per method: the run's eval sets and the cost pseudo-set (with ``conformal``, the calibration
    pseudo-set first: the other cells' guarantee rows are calibrated on it)."""
    return [*([CAL_SET] if conformal else []), *datasets, COST_SET]


def fitted_ok(store: RunStore, cache: CheckpointCache, method: str, seed: int, fold: int) -> bool:
    """The run records a checkpoint for (method, seed, fold) and the cache still holds it (else ``--resume``
    fits it again, from the cache when it can, so that predict, serve and dadc find it)."""
    entry = store.fitted_entry(method, seed, fold)
    return entry is not None and cache.path(str(entry.get("key"))).exists()
