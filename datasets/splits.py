"""Seeded, recorded train/validation splits of the training set, and k-fold splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError


@dataclass(frozen=True)
class SplitSpec:
    """How the 60k training images are divided. With ``folds`` > 1 fold ``fold`` is the validation part
    (``val_fraction`` is then ignored); otherwise a random ``val_fraction`` is held out. ``max_train`` keeps only
    the first n training images of the split (smoke runs); 0 keeps all. ``data`` names the images divided: MNIST's
    60k, or a user's --data by its content hash (datasets/user_data.py), so checkpoints of two datasets never mix."""

    val_fraction: float = 0.1
    split_seed: int = 0
    folds: int = 1
    fold: int = 0
    max_train: int = 0
    data: str = "mnist-train"

    def __post_init__(self) -> None:
        if self.folds < 1 or not 0 <= self.fold < self.folds:
            raise UsageError(f"fold {self.fold} is not in 0..{self.folds - 1} (--folds {self.folds})")
        if self.folds == 1 and not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @property
    def split_id(self) -> str:
        part = f"kfold{self.folds}-{self.fold}" if self.folds > 1 else f"val{self.val_fraction:g}"
        return f"{self.data}:{part}:seed{self.split_seed}:max{self.max_train}"


def fold_bounds(n: int, folds: int) -> list[int]:
    """Where the k folds of a permutation of n items start and end."""
    return [round(i * n / folds) for i in range(folds + 1)]


def smallest_train_size(n: int, folds: int, val_fraction: float, max_train: int) -> int:
    """The size of the smallest training part over every fold, as ``split_indices`` cuts it (no permutation)."""
    if folds > 1:
        b = fold_bounds(n, folds)
        size = n - max(hi - lo for lo, hi in zip(b, b[1:]))
    else:
        size = n - round(n * val_fraction)
    return min(size, max_train) if max_train else size


def split_indices(n: int, spec: SplitSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of a set of size n: a seeded permutation, cut into parts."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.split_seed))
    if spec.folds > 1:
        bounds = fold_bounds(n, spec.folds)
        val = perm[bounds[spec.fold] : bounds[spec.fold + 1]]
        train = torch.cat([perm[: bounds[spec.fold]], perm[bounds[spec.fold + 1] :]])
    else:
        n_val = round(n * spec.val_fraction)
        val, train = perm[:n_val], perm[n_val:]
    if spec.max_train:
        train = train[: spec.max_train]
    return train, val


def split(data: ImageSet, spec: SplitSpec) -> tuple[ImageSet, ImageSet]:
    train, val = split_indices(len(data), spec)
    return data.subset(train), data.subset(val)
