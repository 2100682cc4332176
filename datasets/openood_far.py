"""The far-OOD sets of OpenOOD v1's MNIST benchmark that are image folders, read from the user's data folder
(``--data-dir`` / ``BENCH_DATA``) when they have them; bench never downloads or ships them. CIFAR-10, the fourth,
is ``ood:cifar10-grey`` (through torchvision).

``<data-dir>/<folder>/``: every image file under it, recursively (DTD's ``images/<class>/*.jpg`` works as it is),
in sorted order of the path below the folder. Each image is made grey (Pillow's ITU-R 601 luma), resized so that
its shorter side is 28 pixels (bilinear) and centre-cropped to 28x28: OpenOOD's test transform for MNIST
(``Resize(28)``, ``CenterCrop(28)``), which feeds its LeNet RGB images where bench's networks take one grey channel.
A folder that is there is part of the default eval sets (as notMNIST is); one that is not is refused by name, with
the folder it expects, when named in ``--datasets``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: eval set -> (folder under the data folder, what it is)
FOLDERS = {
    "ood:texture": ("texture", "Describable Textures (DTD)"),
    "ood:tin": ("tin", "TinyImageNet"),
    "ood:places365": ("places365", "Places365"),
}


def image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(folder).as_posix())


def present(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def grey28(path: Path) -> np.ndarray:
    """One image as OpenOOD's MNIST test transform sees it, in grey: shorter side to 28 (bilinear), centre crop."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    from bench.datasets.image_files import open_image  # a one-line refusal of a bomb or a broken file

    with open_image(path) as im:
        grey = im.convert("L")
    small = TF.center_crop(TF.resize(grey, 28, interpolation=InterpolationMode.BILINEAR), [28, 28])
    return np.asarray(small, dtype=np.uint8)


def load(name: str, ctx: EvalContext) -> EvalData:
    folder_name, what = FOLDERS[name]
    folder = Path(ctx.data_dir) / folder_name
    files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise DataError(f"{name} ({what}) is not in {ctx.data_dir}: put its image files under {folder}/ (any "
                        "sub-folders; bench does not download it)")
    files = files[: ctx.cap(len(files))]
    images = torch.from_numpy(np.stack([grey28(f) for f in files])).unsqueeze(1)
    return EvalData(name, images, torch.full((len(files),), -1), "ood", "ood", group="far")


for _name, (_folder, _what) in FOLDERS.items():
    EVAL_SETS.add(_name, EvalSetSpec(lambda ctx, _n=_name: load(_n, ctx), offline=False, report_group="ood-far",
                                     present=lambda d, _f=_folder: present(Path(d) / _f), downloads=False),
                  f"{_what} images, grey 28x28, from <data-dir>/{_folder}/, far OOD (OpenOOD v1)")
