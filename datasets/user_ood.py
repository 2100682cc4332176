"""User OOD sets: ``--ood NAME=PATH`` registers ``ood:NAME``, read from a folder of images, an .npz or an IDX file.

Reading rules (stated once, also in docs/evaluation-sets.md):

- Folder: every file with an image suffix (.png .jpg .jpeg .bmp .gif .tif .tiff .webp), sorted by name, read with
  Pillow (first frame); any other file is ignored. A file that Pillow cannot read is an error naming the file.
- .npz: the array named ``images``, else ``x``, else the only array in the file. Shapes (N, H, W), (N, 1, H, W),
  (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4 (alpha is dropped); one image as (H, W) or (H, W, C). A 3-D array
  of 3 or 4 planes (3, H, W) is refused as ambiguous (one colour image or several grey ones?): add the missing
  axis. dtype uint8 ([0, 255]) or float in [0, 1].
- IDX (optionally .gz, e.g. MNIST-format files): uint8 (N, H, W) or (N, H, W, C).
- Colour -> grey with the ITU-R 601 luma weights (0.299 R + 0.587 G + 0.114 B, Pillow's "L"); any size -> 28x28 by
  bilinear resize with antialiasing, aspect ratio not kept (crop beforehand if it matters). Images are not
  inverted: MNIST digits are white on black, so dark-on-light sets are far from it by brightness alone.
- The group is ``user`` (neither near nor far unless you say so in your own analysis).
- On a run with ``--data`` (your own dataset) the set is read at its own shape and must match the data's C x H x W
  (datasets/user_data.py ``read_ood``); ``--ood-resize`` converts it instead.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets.evalsets import EvalContext, EvalData, EvalSetSpec
from bench.datasets.idx import parse_idx, read_bytes
from bench.errors import DataError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LUMA = (0.299, 0.587, 0.114)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_spec(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    name = name.strip()
    if name.startswith("ood:"):
        name = name[4:]
    if not sep or not path.strip() or not _NAME.match(name):
        raise UsageError(f"--ood {spec!r} is malformed; use --ood NAME=PATH (NAME of letters, digits, _ . -), "
                         "e.g. --ood omniglot=data/omniglot")
    return name, Path(path.strip()).expanduser()


@dataclass(frozen=True)
class _UserSet:
    """Builds ``ood:NAME`` from PATH (a value, so that the run's registry holds what it reads)."""

    name: str
    path: Path

    def __call__(self, ctx: EvalContext) -> EvalData:
        return load_user_set(self.name, self.path, ctx)


def specs(items: list[str] | tuple[str, ...]) -> dict[str, EvalSetSpec]:
    """``ood:NAME`` -> its eval-set spec for each ``NAME=PATH`` (the run's own sets, datasets/source.py
    ``run_sets``). Checks that each path exists; reading happens when the run builds the set."""
    out: dict[str, EvalSetSpec] = {}
    for item in items:
        name, path = parse_spec(item)
        full = f"ood:{name}"
        if not path.exists():
            raise UsageError(f"--ood {item}: {path} does not exist")
        if full in out:
            raise UsageError(f"--ood {name}=... is given twice; give each NAME once")
        out[full] = EvalSetSpec(_UserSet(full, path), offline=True, any_shape=True)
    return out


def path_of(spec: EvalSetSpec) -> Path | None:
    """The folder or file a user's --ood set reads (None for any other set)."""
    return spec.build.path if isinstance(spec.build, _UserSet) else None


def to_grey28(arr: np.ndarray, source: str) -> torch.Tensor:
    """Array of images -> uint8 (N, 1, 28, 28). See the module docstring for accepted shapes and dtypes."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise DataError(f"{source}: float images must lie in [0, 1] (got [{a.min():g}, {a.max():g}]); "
                            "save uint8 [0, 255] or divide by 255")
        x = torch.from_numpy(a.astype(np.float32))
    else:
        raise DataError(f"{source}: images must be uint8 or float in [0, 1], got {a.dtype}")
    if x.dim() == 2:  # one grey image
        x = x[None, None]
    elif x.dim() == 3 and x.shape[-1] in (3, 4) and min(x.shape[:2]) > 4:  # one colour image (H, W, C)
        x = x.permute(2, 0, 1).unsqueeze(0)
    elif x.dim() == 3 and x.shape[0] in (3, 4):  # (3, H, W): one RGB image or three grey ones? refuse to guess
        raise DataError(f"{source}: shape {tuple(a.shape)} is ambiguous (one {'RGB' if x.shape[0] == 3 else 'RGBA'} "
                        f"image or {x.shape[0]} grey images); save one colour image as (1, {x.shape[0]}, H, W) or "
                        f"(H, W, {x.shape[0]}), grey images as ({x.shape[0]}, 1, H, W)")
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    elif not (x.dim() == 4 and x.shape[1] in (1, 3, 4)):
        raise DataError(f"{source}: expected images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
                        f"1, 3, 4, or one image (H, W) or (H, W, C); got {tuple(a.shape)}")
    if len(x) == 0:
        raise DataError(f"{source} holds no images")
    if x.shape[1] >= 3:
        x = sum(w * x[:, i : i + 1] for i, w in enumerate(LUMA))
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _read_folder(path: Path) -> torch.Tensor:
    from bench.datasets.image_files import open_image  # a one-line refusal of a bomb or a broken file

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{path} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = []
    for f in files:
        with open_image(f) as im:
            grey = np.asarray(im.convert("L"), dtype=np.uint8)
        out.append(to_grey28(grey[None], str(f)))
    return torch.cat(out)


def _read_npz(path: Path) -> torch.Tensor:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = next((k for k in ("images", "x") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"{path}: no array named 'images' or 'x' among {keys or 'no arrays'}")
            arr = z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    return to_grey28(arr, f"{path}[{key}]")


def read_images(path: Path) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) from a folder, an .npz or an IDX (.gz) file."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.suffix == ".npz":
        return _read_npz(path)
    data = read_bytes(path)
    if data[:2] != b"\x00\x00":
        raise DataError(f"{path} is neither a folder of images, an .npz, nor an IDX file (see docs/evaluation-sets.md)")
    return to_grey28(parse_idx(data, str(path)).numpy(), str(path))


def load_user_set(name: str, path: Path, ctx: EvalContext) -> EvalData:
    if ctx.data is not None and ctx.data.is_user_data:  # a run on the user's own data: its shape, never resized
        from bench.datasets.image_files import read_ood  # unless --ood-resize

        images = read_ood(path, ctx.data.spec, ctx.ood_resize, name)
    else:
        images = read_images(path)
    n = ctx.cap(len(images))
    return EvalData(name, images[:n], torch.full((n,), -1), "ood", "ood", severity="", group="user")
