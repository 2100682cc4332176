"""Checks of a resolved run that need more than one key at a time, done before anything is written or trained:
eval-set parameters (model-dependent sets are otherwise built only after training), duplicate eval sets under two
spellings, folds against the number of training images, and a writable checkpoint cache.

Single-key ranges live with their dataclasses (``SplitConfig``, ``EvalConfig``, ``TrainRecipe``) and in
``bench.config.resolve``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from bench.errors import UsageError

MNIST_TRAIN = 60_000


def check_eval_sets(names: list[str], sets=None) -> None:
    from bench.datasets import evalsets

    seen: dict[tuple[str, str], str] = {}
    for name in names:
        parsed = evalsets.check(name, sets)
        family = name.partition(":")[0]
        key = (family, repr(parsed))
        if key in seen:
            raise UsageError(f"eval sets {seen[key]} and {name} are the same set under two spellings; give it once")
        seen[key] = name


def check_folds(folds: int) -> None:
    if folds > MNIST_TRAIN:
        raise UsageError(f"folds={folds} is more than the {MNIST_TRAIN} training images (some folds would be empty); "
                         "use e.g. --folds 5")


def check_writable(path: Path, flag: str) -> None:
    """Create ``path`` (a folder) if needed and write a file in it: a one-line error now beats a traceback after an
    hour of training."""
    probe = Path(path) / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to {flag} {path}: {e.strerror or e}; choose another {flag}") from None


def check_run(cfg, datasets: list[str], sets=None) -> None:
    check_eval_sets(datasets, sets)
    check_folds(cfg.folds)
    check_writable(Path(cfg.cache_dir), "--cache-dir")


def check_file_writable(path: Path, flag: str) -> None:
    """A file bench is about to write: its folder must exist (or be creatable) and be writable, and the path must
    not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    check_writable(path.parent if str(path.parent) else Path("."), flag)
