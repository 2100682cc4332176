"""MNIST and Fashion-MNIST (training and test sets), embedded in the package as IDX .gz files, loaded into uint8
tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.datasets.idx import read_idx

DATA_ROOT = Path(__file__).parent / "data"

# md5 of the *decompressed* files (the .gz wrappers differ from the historical ones): see data/README.md.
FILES = {
    "mnist": {
        "train_images": ("MNIST/raw/train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": ("MNIST/raw/train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
        "test_images": ("MNIST/raw/t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
        "test_labels": ("MNIST/raw/t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion": {
        "train_images": ("FashionMNIST/raw/train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train_labels": ("FashionMNIST/raw/train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
        "test_images": ("FashionMNIST/raw/t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
        "test_labels": ("FashionMNIST/raw/t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
    },
}


@dataclass(frozen=True)
class ImageSet:
    """uint8 images (N, 1, H, W) in raw [0, 255] and int64 labels (N,) (-1 where unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor | slice) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged (never in place)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def load_embedded(dataset: str, part: str, root: Path = DATA_ROOT) -> ImageSet:
    """Load ``part`` ('train' or 'test') of an embedded dataset ('mnist' or 'fashion')."""
    files = FILES[dataset]
    img_file, img_md5 = files[f"{part}_images"]
    lab_file, lab_md5 = files[f"{part}_labels"]
    images = read_idx(root / img_file, img_md5)
    labels = read_idx(root / lab_file, lab_md5).long()
    return ImageSet(images.unsqueeze(1), labels)
