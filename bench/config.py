"""Run configuration: a profile (YAML) gives defaults, ``--config`` and flags override, ``--set key=value`` last.

The resolved configuration is a frozen dataclass tree, saved in every run's manifest. Keys:
top level ``benchmark, backbone, methods, datasets, seeds, folds, device, data_dir, cache_dir, save_features``;
sections ``train.*`` (``TrainRecipe``), ``split.*`` (``SplitSpec`` less the fold), ``eval.*``, ``executor.*`` (where
the grid runs); and ``<method>.<option>`` for each method's own config (e.g. ``mcdropout.passes=20``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UsageError
from bench.methods.core.training import COMPILE_MODES, TrainRecipe

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.1
    split_seed: int = 0
    max_train: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"split.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_train < 0:  # a negative n would act as a Python slice from the end
            raise UsageError(f"split.max_train must be >= 0 (0 = all), got {self.max_train}")


@dataclass(frozen=True)
class EvalConfig:
    max_eval: int = 0  # keep only the first n images of each eval set (0 = all)
    #: a further cap on the model-dependent (attack) sets only: fgsm, pgd, uap, fooling (0 = no cap of their own).
    #: Attacking every method's classifier dominates a full-size run's cost; the other sets can then run whole
    max_attack: int = 0
    batch_size: int = 2048
    cost_images: int = 2000  # images timed for inference ms / 1k
    #: also predict the validation split once per (method, seed, fold) (a ``calibration`` cell) and add split-conformal
    #: coverage / set size and SGR rows to every labelled eval set (bench/conformal.py, docs/guarantees.md)
    conformal: bool = False
    #: the networks' inference forward through torch.compile, one fixed batch shape ("reduce-overhead": captured in
    #: CUDA graphs on a GPU; docs/performance.md). Equal to eager within floating-point noise, not bit for bit
    compile: str = "none"

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise UsageError(f"eval.compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.max_eval < 0:  # a negative n would act as a Python slice from the end
            raise UsageError(f"eval.max_eval must be >= 0 (0 = all), got {self.max_eval}")
        if self.max_attack < 0:
            raise UsageError(f"eval.max_attack must be >= 0 (0 = no cap of its own), got {self.max_attack}")
        for name in ("batch_size", "cost_images"):
            if getattr(self, name) < 1:
                raise UsageError(f"eval.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the grid's units run (see docs/scale-out.md). Not part of what determines results: a run may be
    resumed under another executor."""

    kind: str = "local"  # local | ray
    jobs: int = 0  # local: worker processes (1 = sequential, in this process; 0 = auto, bench/run/executors.py)
    address: str = ""  # ray: cluster address (e.g. ray://head:10001 or head:6379); "" = a local Ray instance
    cpus_per_unit: float = 0.0  # CPUs (= torch threads) per unit; 0 = auto: local cores // jobs, ray 1
    gpus_per_unit: float = 1.0  # ray: GPU share per unit when the run uses CUDA (0.5: two units per GPU)
    max_retries: int = 1  # re-runs of a unit whose worker process died (then its cells become error rows)
    # --resume fits again a finished (method, seed, fold) whose checkpoint is gone from the cache, so that predict,
    # serve and dadc find it; false: only missing cells are computed (a run put back from banked rows,
    # tools/bank_chunk.py, would otherwise train every finished method again)
    refit: bool = True


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunConfig:
    profile: str = "quick"
    benchmark: str = "mnist"  # datasets/benchmarks.py: its data and default eval sets (--benchmark)
    methods: tuple[str, ...] = ("msp",)
    backbone: str = "lenet"
    datasets: tuple[str, ...] = ()  # empty: MNIST test plus every OOD set available offline
    seeds: tuple[int, ...] = (0,)
    folds: int = 1
    device: str = "auto"
    data_dir: str = "data"
    cache_dir: str = "results/cache"
    save_features: bool = False  # also keep each cell's penultimate features (logits are always kept)
    ood: tuple[str, ...] = ()  # user OOD sets, NAME=PATH (folder of images, .npz or IDX) -> eval set ood:NAME
    data: str = ""  # a user's labelled dataset NAME=PATH instead of MNIST (datasets/user_data.py); "" = MNIST
    ood_resize: bool = False  # with data: resize user OOD sets of another shape (else they are refused)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    split: SplitConfig = field(default_factory=SplitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    method_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def options_for(self, method: str) -> dict[str, Any]:
        return dict(dict(self.method_options).get(method, ()))


SECTIONS = {"train": TrainRecipe, "split": SplitConfig, "eval": EvalConfig, "executor": ExecutorConfig}
TOP_KEYS = [f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS and f.name != "method_options"]


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder; give a YAML file") from None
    except OSError as e:
        raise UsageError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = e.problem or e.context or type(e).__name__
        raise UsageError(f"{what} {path} does not parse as YAML{where}: {problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{what} {path} does not parse as YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML value or a --set string to the declared field type, with a one-line error."""
    origin = typing.get_origin(typ)
    try:
        if origin is tuple:
            inner = typing.get_args(typ)[0]
            items = value.split(",") if isinstance(value, str) else list(value if isinstance(value, (list, tuple))
                                                                          else [value])
            return tuple(coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in items if v != "")
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    name = getattr(typ, "__name__", str(typ))
    raise UsageError(f"{key}={value!r} is not a valid {name}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``['train.epochs=5', 'mcdropout.passes=10']`` -> nested dict of strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set {item!r} is malformed; use --set key=value, e.g. --set train.epochs=5")
        parts = key.split(".")
        if len(parts) > 2:
            raise UsageError(f"--set {item!r}: keys have at most one dot (section.key)")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {item!r} conflicts with an earlier --set of {p}")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build_section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise UsageError(f"{where} must be a mapping of options, got {values!r}")
    hints = _hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise UsageError(f"unknown key {where}.{unknown[0]} (valid: {', '.join(f'{where}.{k}' for k in hints)})")
    return cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def resolve(layers: list[dict[str, Any]], method_configs: dict[str, type]) -> RunConfig:
    """Merge the layers (profile, file, flags, --set) and validate every key against its dataclass.
    ``method_configs`` maps method names to their Config dataclass (for ``<method>.<option>`` keys)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    hints = _hints(RunConfig)
    kwargs: dict[str, Any] = {}
    options: dict[str, tuple[tuple[str, Any], ...]] = {}
    for key, value in merged.items():
        if key in SECTIONS:
            kwargs[key] = _build_section(SECTIONS[key], value, key)
        elif key in TOP_KEYS:
            kwargs[key] = coerce(value, hints[key], key)
        elif key in method_configs:
            cfg = _build_section(method_configs[key], value, key)
            options[key] = tuple(sorted(dataclasses.asdict(cfg).items()))
        else:
            valid = TOP_KEYS + list(SECTIONS) + sorted(method_configs)
            raise UsageError(f"unknown config key {key!r} (valid: {', '.join(valid)})")
    kwargs["method_options"] = tuple(sorted(options.items()))
    cfg = RunConfig(**kwargs)
    if cfg.folds < 1:
        raise UsageError(f"folds must be >= 1, got {cfg.folds}")
    if not cfg.seeds:
        raise UsageError("seeds is empty; give at least one, e.g. --seeds 0")
    bad = [s for s in cfg.seeds if not 0 <= s < 2 ** 32]
    if bad:  # numpy's and scikit-learn's generators (conformal tie-breaks, mdsens) refuse these after training
        raise UsageError(f"seed {bad[0]} is out of range; seeds are integers from 0 to {2 ** 32 - 1}")
    if len(set(cfg.seeds)) != len(cfg.seeds):  # from a config file or --set (the CLI flag checks its own)
        raise UsageError(f"seeds {list(cfg.seeds)} repeat a seed; give each once")
    if not cfg.methods:
        raise UsageError("methods is empty; give at least one, e.g. --methods msp (see python -m bench list)")
    from bench.datasets.benchmarks import BENCHMARKS

    if cfg.benchmark not in BENCHMARKS:
        raise UsageError(f"{BENCHMARKS.unknown_message(cfg.benchmark)}; see python -m bench list benchmarks")
    if cfg.data and cfg.benchmark != "mnist":
        raise UsageError(f"--data makes a benchmark of your files; drop --benchmark {cfg.benchmark}")
    ex = cfg.executor
    if ex.kind not in EXECUTORS:
        raise UsageError(f"executor.kind={ex.kind!r} is not valid; use {' or '.join(EXECUTORS)} (--executor)")
    if ex.jobs < 0:
        raise UsageError(f"executor.jobs must be >= 1, or 0 for auto, got {ex.jobs} (--jobs N or --jobs auto)")
    if not (0 <= ex.cpus_per_unit < math.inf and 0 <= ex.gpus_per_unit < math.inf) or ex.max_retries < 0:
        raise UsageError("executor.cpus_per_unit, executor.gpus_per_unit and executor.max_retries must be >= 0 "
                         "and finite")
    return cfg


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.exists():
        raise UsageError(f"unknown profile {name!r} (available: {', '.join(profiles())})")
    data = load_yaml(path, "profile")
    return {"profile": name, **data}
