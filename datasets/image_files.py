"""Image arrays and files -> uint8 (N, C, H, W) tensors, with one-line errors: what a user's --data
(datasets/user_data.py) and a user's --ood sets (datasets/user_ood.py) both read. Channels first, 1 (grey) or 3
(RGB); uint8, integers in [0, 255] or floats in [0, 1]; nothing is rescaled by guess."""

from __future__ import annotations

import contextlib
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.datasets.idx import parse_idx, read_bytes
from bench.errors import DataError, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


# --- arrays -> tensors, with one-line errors ----------------------------------------------------------------------
def to_images(arr: np.ndarray, source: str) -> torch.Tensor:
    """uint8 (N, C, H, W) from (N, H, W) or channels-first (N, C, H, W), C in 1, 3 (see the module docstring)."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[1] not in (1, 3):
        if a.shape[-1] in (1, 3, 4):
            raise UsageError(f"{source}: shape {a.shape} is channels-last (N, H, W, C); bench reads channels first: "
                             "save np.transpose(x, (0, 3, 1, 2))")
        raise UsageError(f"{source}: shape {a.shape} has {a.shape[1]} channels; bench takes 1 (grey) or 3 (RGB)")
    elif a.ndim != 4:
        raise UsageError(f"{source}: images must be (N, H, W) or (N, C, H, W), got shape {a.shape}")
    if len(a) == 0:
        raise UsageError(f"{source} holds no images")
    if min(a.shape[2:]) < 2:
        raise UsageError(f"{source}: images of {a.shape[2]}x{a.shape[3]} pixels; bench needs at least 2x2")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise UsageError(f"{source}: integer pixels must lie in [0, 255] (got [{a.min()}, {a.max()}]); "
                             "scale them to uint8 yourself (bench does not guess a range)")
        return torch.from_numpy(a.astype(np.uint8))
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise UsageError(f"{source}: float pixels must lie in [0, 1] (got [{np.nanmin(a):g}, {np.nanmax(a):g}]); "
                             "divide by 255, or save uint8")
        return torch.from_numpy(np.round(a * 255).astype(np.uint8))
    raise UsageError(f"{source}: images must be uint8, integers in [0, 255] or floats in [0, 1], got {a.dtype}")


def to_labels(arr: np.ndarray, n: int, source: str) -> torch.Tensor:
    a = np.asarray(arr)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise UsageError(f"{source}: labels must be one integer per image (N,), got shape {a.shape}")
    if len(a) != n:
        raise UsageError(f"{source}: {len(a)} labels for {n} images; give one label per image")
    if not np.issubdtype(a.dtype, np.integer):
        raise UsageError(f"{source}: labels must be integers (class indices 0..K-1), got {a.dtype}; "
                         "save e.g. y.astype(np.int64)")
    if n and a.min() < 0:
        raise UsageError(f"{source}: labels must be class indices 0..K-1, got {a.min()}")
    return torch.from_numpy(a.astype(np.int64))


#: the largest image side (height or width, pixels) --data and data-shaped --ood sets read; BENCH_MAX_IMAGE_SIDE
#: overrides it. bench's models are built for small images: a 3000 x 3000 folder would be decoded whole into memory
MAX_IMAGE_SIDE = 1024


def max_image_side() -> int:
    import os

    text = os.environ.get("BENCH_MAX_IMAGE_SIDE", str(MAX_IMAGE_SIDE))
    try:
        side = int(text)
    except ValueError:
        side = 0
    if side < 1:
        raise UsageError(f"BENCH_MAX_IMAGE_SIDE={text!r} must be a whole number of pixels >= 1")
    return side


def check_side(height: int, width: int, source: str) -> None:
    """Refuse images larger than ``max_image_side()`` from their declared size, before any pixel is decoded."""
    side = max_image_side()
    if max(height, width) > side:
        raise UsageError(f"{source}: images of {width}x{height} pixels (W x H) are larger than bench reads ({side} "
                         "a side; BENCH_MAX_IMAGE_SIDE raises it); shrink them first")


def declared_arrays(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array name -> (shape, dtype), from the .npz members' headers (nothing is read but the headers), so that a
    size can be refused before numpy allocates it. Raises what zipfile and numpy raise on a damaged file."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        for key, (shape, _) in declared_arrays(path).items():
            if len(shape) in (3, 4):  # (N, H, W), (N, C, H, W) or channels last (N, H, W, C), refused later
                last = len(shape) == 4 and shape[1] not in (1, 3) and shape[-1] in (1, 3, 4)
                check_side(*(shape[1:3] if last else shape[-2:]), f"{path}[{key}]")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.keys()}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Any]:
    """A Pillow image of ``path``, or one line: unreadable, or more pixels than Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels; Pillow only warns up to twice that: bench refuses)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path} has more pixels than bench reads ({Image.MAX_IMAGE_PIXELS:,}, Pillow's "
                        "decompression-bomb limit); shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS in your own "
                        "code if you trust the file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path} is not a readable image ({type(e).__name__}); remove it or convert it") from None


def read_image(f: Path) -> np.ndarray:
    with open_image(f) as im:
        check_side(im.height, im.width, str(f))  # from the header: the pixels are decoded by convert below
        grey = im.mode in GREY_MODES
        return np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)


def shape_text(x: torch.Tensor) -> str:
    return "x".join(str(d) for d in x.shape[1:])


# --- user OOD sets at the data's shape ------------------------------------------------------------------------------
def read_ood(path: Path, spec: Any, resize: bool, name: str) -> torch.Tensor:
    """uint8 (N, C, H, W) images of a --ood set for a run on ``spec``'s data: of its shape, or refused (one line),
    or converted when ``resize`` (--ood-resize): grey <-> RGB (ITU-R 601 luma / repeated), bilinear with
    antialiasing to H x W."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"{name}: {path} has no image files")
        arrs = [read_image(f) for f in files]
        sizes = {a.shape for a in arrs}
        if len(sizes) > 1 and not resize:
            raise UsageError(f"{name}: {path} holds images of different sizes or channels; make them one shape "
                             "or pass --ood-resize")
        sets = [to_images((a.transpose(2, 0, 1) if a.ndim == 3 else a[None])[None], str(f))
                for a, f in zip(arrs, files)]
        if len(sizes) == 1:
            x = torch.cat(sets)
        else:
            x = torch.cat([_convert(s, spec.shape) for s in sets])
    elif path.suffix == ".npz":
        z = read_npz(path)
        key = next((k for k in ("images", "x") if k in z), next(iter(z)) if len(z) == 1 else None)
        if key is None:
            raise UsageError(f"{name}: {path} has no array 'images' or 'x'")
        x = to_images(z[key], f"{path}[{key}]")
    else:
        x = to_images(parse_idx(read_bytes(path), str(path)).numpy(), str(path))
    if tuple(x.shape[1:]) == spec.shape:
        return x
    if not resize:
        want = shape_text(torch.empty(0, *spec.shape))
        raise UsageError(f"{name} is {shape_text(x)} but --data {spec.name} is {want} "
                         "(C x H x W); bench does not resize silently: give images of that shape or pass --ood-resize")
    return _convert(x, spec.shape)


def _convert(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    import torch.nn.functional as F

    f = x.float() / 255.0
    if f.shape[1] == 3 and shape[0] == 1:
        f = 0.299 * f[:, :1] + 0.587 * f[:, 1:2] + 0.114 * f[:, 2:3]
    elif f.shape[1] == 1 and shape[0] == 3:
        f = f.expand(-1, 3, -1, -1)
    if tuple(f.shape[2:]) != shape[1:]:
        f = F.interpolate(f, size=shape[1:], mode="bilinear", antialias=True, align_corners=False)
    return (f.clamp(0, 1) * 255).round().to(torch.uint8)
