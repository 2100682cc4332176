"""Your own labelled dataset: ``--data NAME=PATH`` (``bench run``) / ``data="NAME=PATH"`` (``bench.evaluate``).

The data replaces MNIST for a run: its training part is what bench's train/validation split (and k-fold) divides,
its test part is the in-distribution eval set ``NAME``. Reading rules (stated once, also in docs/your-data.md):

- ``.npz`` with ``images`` and ``labels``: one pool, cut into test and training parts by a seeded permutation
  (``TEST_SEED`` = 0, fixed, so the test part never depends on the run's ``split.split_seed``): the first
  round(20% of N) images of the permutation are the test part, the rest the training part (not stratified).
- ``.npz`` with ``x_train, y_train, x_test, y_test``: your own test part, used as given.
- IDX files (the MNIST format, optionally ``.gz``): ``IMAGES,LABELS`` (one pool, split as above) or
  ``TRAIN_IMAGES,TRAIN_LABELS,TEST_IMAGES,TEST_LABELS`` (comma-separated paths).
- A folder of class subfolders (torchvision's ImageFolder layout, ``PATH/<class>/<image>``): classes are the
  subfolder names sorted, label = index in that order; one pool, split as above. ``PATH/train/<class>/...`` and
  ``PATH/test/<class>/...`` give your own test part. Image files: .png .jpg .jpeg .bmp .gif .tif .tiff .webp, read
  with Pillow (first frame); all grey -> 1 channel, otherwise 3 (RGB; alpha dropped).
- Arrays: images (N, H, W) (grey) or (N, C, H, W) with C = 1 or 3 (channels first); uint8 or integers in
  [0, 255] are pixel values as they are; floats must lie in [0, 1] and are rounded to uint8 (x * 255); anything else
  is refused. Labels: integers 0..K-1, every class present, K >= 2. Images are never resized: every image has the
  data's one H x W.

Identity: ``sha256`` of the decoded uint8 images, labels and the train/test cut. It goes into the split id (so
every checkpoint cache key) and into the manifest, so two datasets (even under one name and path) never share a
checkpoint and ``--resume`` refuses a run made on other data.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.datasets.idx import parse_idx, read_bytes
from bench.datasets.image_files import (
    IMAGE_SUFFIXES,
    check_side,
    read_image,
    read_npz,
    read_ood,
    shape_text,
    to_images,
    to_labels,
)
from bench.datasets.mnist import ImageSet
from bench.errors import UsageError

TEST_FRACTION = 0.2
TEST_SEED = 0
MNIST_SHAPE = (1, 28, 28)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOADED: dict[tuple, "UserData"] = {}  # per process: (spec text, file signature) -> data


@dataclass(frozen=True)
class DataSpec:
    """What a run records about the data (manifest ``data``); ``sha256`` is its identity."""

    name: str
    path: str
    format: str  # npz | npz-split | idx | idx-split | folder | folder-split
    sha256: str
    channels: int
    height: int
    width: int
    num_classes: int
    n_train: int  # the part the train/validation split divides
    n_test: int  # the in-distribution eval set NAME
    test_part: str  # how the test part was chosen
    classes: tuple[str, ...] = ()  # folder class names, in label order

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def split_name(self) -> str:
        """What ``SplitSpec.data`` holds: the content, not the name or path."""
        return f"user-{self.sha256}"

    def describe(self) -> str:
        return f"{self.name} ({self.channels}x{self.height}x{self.width}, {self.num_classes} classes)"


@dataclass(frozen=True)
class UserData:
    spec: DataSpec
    train: ImageSet
    test: ImageSet

    def part(self, part: str) -> ImageSet:
        return self.train if part == "train" else self.test


# --- parsing NAME=PATH ------------------------------------------------------------------------------------------------
def parse_arg(text: str) -> tuple[str, list[Path]]:
    name, sep, path = str(text).partition("=")
    name = name.strip()
    if not sep or not path.strip() or not _NAME.match(name):
        raise UsageError(f"--data {text!r} is malformed; use --data NAME=PATH (NAME of letters, digits, _ . -), "
                         "e.g. --data digits=digits.npz")
    paths = [Path(p.strip()).expanduser() for p in path.split(",")]
    if len(paths) not in (1, 2, 4) or any(not str(p) or str(p) == "." for p in paths):
        raise UsageError(f"--data {text}: give one PATH (.npz or folder), IMAGES,LABELS (IDX) or "
                         "TRAIN_IMAGES,TRAIN_LABELS,TEST_IMAGES,TEST_LABELS (IDX)")
    for p in paths:
        if not p.exists():
            raise UsageError(f"--data {text}: {p} does not exist")
    if len(paths) == 1 and not paths[0].is_dir() and paths[0].suffix != ".npz":
        raise UsageError(f"--data {text}: {paths[0]} is neither an .npz nor a folder; IDX files come as a pair "
                         "IMAGES,LABELS")
    return name, paths


def check_classes(labels: torch.Tensor, source: str) -> int:
    """K = max label + 1; refuses one class only and classes that never occur."""
    present = torch.unique(labels)
    if len(present) < 2:
        raise UsageError(f"{source}: every label is {int(present[0]) if len(present) else '(none)'}; a classifier "
                         "needs at least 2 classes")
    k = int(present.max()) + 1
    if k > len(labels):  # classes 0..K-1 cannot all be present: say so without listing K numbers
        gap = next(i for i, c in enumerate(present.tolist()) if i != c)
        raise UsageError(f"{source}: label {k - 1} with only {len(labels)} images; labels skip class {gap}: relabel "
                         "your classes 0..K-1")
    if len(present) != k:
        missing = sorted(set(range(k)) - set(present.tolist()))
        raise UsageError(f"{source}: labels skip class {missing[0]} ({len(missing)} of 0..{k - 1} never occur); "
                         "relabel your classes 0..K-1")
    return k


# --- readers --------------------------------------------------------------------------------------------------------
def _pair(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_images(images, source)
    return x, to_labels(labels, len(x), source)


def _read_npz(path: Path) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    z = read_npz(path)
    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if split_keys <= set(z):
        return "npz-split", [_pair(z["x_train"], z["y_train"], f"{path}[x_train]"),
                             _pair(z["x_test"], z["y_test"], f"{path}[x_test]")]
    if {"images", "labels"} <= set(z):
        return "npz", [_pair(z["images"], z["labels"], f"{path}[images]")]
    raise UsageError(f"{path}: needs arrays 'images' and 'labels' (or x_train, y_train, x_test, y_test); it holds "
                     f"{', '.join(sorted(z)) or 'no arrays'}")


def _read_idx(paths: list[Path]) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    arrays = [parse_idx(read_bytes(p), str(p)).numpy() for p in paths]
    for p, a in zip(paths[::2], arrays[::2]):  # before the copies to_images makes
        if a.ndim >= 3:
            check_side(*a.shape[-2:], str(p))
    parts = [_pair(arrays[i], arrays[i + 1], str(paths[i])) for i in range(0, len(paths), 2)]
    return ("idx" if len(paths) == 2 else "idx-split"), parts


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_folder(root: Path) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    sub = {p.name for p in _class_dirs(root)}
    split_layout = sub == {"train", "test"}
    roots = [root / "train", root / "test"] if split_layout else [root]
    classes = sorted({d.name for r in roots for d in _class_dirs(r)})
    if not classes:
        raise UsageError(f"{root} has no class subfolders; the layout is {root}/<class>/<image>.png (or "
                         f"{root}/train/<class>/... and {root}/test/<class>/...)")
    files: list[list[tuple[Path, int]]] = []
    for r in roots:
        part = [(f, classes.index(d.name)) for d in _class_dirs(r) for f in _images_in(d)]
        if not part:
            raise UsageError(f"{r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class "
                             "subfolders")
        empty = [d for d in _class_dirs(r) if not any(d in f.parents for f, _ in part)]
        if empty:  # a class without images: dropped silently when it sorts last (K would not match the manifest)
            raise UsageError(f"{empty[0]} is a class folder without image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                             "; add its images or remove the folder")
        files.append(part)
    pixels = [[read_image(f) for f, _ in part] for part in files]
    colour = any(p.ndim == 3 for part in pixels for p in part)
    first: tuple[Path, tuple[int, ...]] | None = None
    parts = []
    for part, arrs in zip(files, pixels):
        out = []
        for (f, _), a in zip(part, arrs):
            if colour and a.ndim == 2:  # a grey image among colour ones: the same grey on every channel
                a = np.repeat(a[:, :, None], 3, axis=2)
            if first is None:
                first = (f, a.shape[:2])
            elif a.shape[:2] != first[1]:
                raise UsageError(f"{root}: images of different sizes ({first[0].relative_to(root)} is "
                                 f"{first[1][1]}x{first[1][0]}, {f.relative_to(root)} is {a.shape[1]}x{a.shape[0]} "
                                 "(W x H)); bench never resizes your data: make them one size first")
            out.append(a.transpose(2, 0, 1) if a.ndim == 3 else a[None])
        parts.append((torch.from_numpy(np.stack(out)), torch.tensor([c for _, c in part], dtype=torch.int64)))
    return ("folder-split" if split_layout else "folder"), parts, tuple(classes)


# --- loading ---------------------------------------------------------------------------------------------------------
def content_hash(parts: list[ImageSet]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr((tuple(p.images.shape), len(p.labels))).encode())
        h.update(p.images.contiguous().numpy().tobytes())
        h.update(p.labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def test_cut(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, test indices) of one pool of n images: the documented seeded 80/20 cut."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(TEST_SEED))
    n_test = round(n * TEST_FRACTION)
    return perm[n_test:], perm[:n_test]


def _signature(paths: list[Path]) -> tuple:
    """Sizes and modification times of every file read (a changed file is read again, in the same process)."""
    out = []
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            with contextlib.suppress(OSError):
                st = f.stat()
                out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def load(text: str) -> UserData:
    """Read ``NAME=PATH`` (see the module docstring); checked, hashed, cached per process."""
    name, paths = parse_arg(text)
    key = (text, _signature(paths))
    if key in _LOADED:
        return _LOADED[key]
    classes: tuple[str, ...] = ()
    if len(paths) > 1:
        fmt, parts = _read_idx(paths)
    elif paths[0].is_dir():
        fmt, parts, classes = _read_folder(paths[0])
    else:
        fmt, parts = _read_npz(paths[0])
    source = f"--data {name}"
    if len(parts) == 2 and parts[0][0].shape[1:] != parts[1][0].shape[1:]:
        raise UsageError(f"{source}: training images are {shape_text(parts[0][0])} but test images "
                         f"{shape_text(parts[1][0])}; give both parts one shape")
    k = check_classes(torch.cat([p[1] for p in parts]), source)
    if len(parts) == 1:
        tr, te = test_cut(len(parts[0][0]))
        train, test = ImageSet(parts[0][0][tr], parts[0][1][tr]), ImageSet(parts[0][0][te], parts[0][1][te])
        rule = f"seeded {TEST_FRACTION:.0%} of the pool (seed {TEST_SEED})"
    else:
        train, test = ImageSet(*parts[0]), ImageSet(*parts[1])
        rule = "given"
    c, h, w = train.images.shape[1:]
    spec = DataSpec(name=name, path=",".join(str(p) for p in paths), format=fmt,
                    sha256=content_hash([train, test]), channels=int(c), height=int(h), width=int(w),
                    num_classes=k, n_train=len(train), n_test=len(test), test_part=rule, classes=classes)
    _LOADED.clear()  # one dataset per run: keep only the latest
    _LOADED[key] = UserData(spec, train, test)
    return _LOADED[key]


def manifest_entry(spec: DataSpec) -> dict[str, Any]:
    return {**asdict(spec), "classes": list(spec.classes), "shape": list(spec.shape)}


# --- the run's side --------------------------------------------------------------------------------------------------
def id_set_spec() -> Any:
    """The eval set of a user's test part (in the run's own registry, datasets/source.py ``run_sets``)."""
    from bench.datasets.evalsets import EvalSetSpec

    return EvalSetSpec(_id_set, offline=True, any_shape=True)


def _id_set(ctx) -> Any:
    from bench.datasets.evalsets import EvalData

    if ctx.data is None or not ctx.data.is_user_data:
        raise UsageError("this eval set is a --data test part; run with --data NAME=PATH")
    test = ctx.data.part("test")
    n = ctx.cap(len(test))
    return EvalData(ctx.data.name, test.images[:n], test.labels[:n], kind="id")


# --- checks before anything is written or trained ---------------------------------------------------------------------
def check_run(cfg: Any, datasets: list[str], methods: list[str], source: Any, sets: Any) -> None:
    """Every check of a run on the user's data: sets of its shape, methods that can train at its shape, a split
    with something in every part, k-fold within the images, --resume on the same data (``check_resume``)."""
    if not source.is_user_data:
        if getattr(cfg, "ood_resize", False):
            raise UsageError("--ood-resize goes with --data NAME=PATH (MNIST runs always bring OOD sets to 28x28 "
                             "grey, docs/evaluation-sets.md)")
        return
    check_sets(datasets, source, getattr(cfg, "ood_resize", False), sets)
    check_methods(methods, source)
    check_split(source, cfg.folds, cfg.split.val_fraction, cfg.split.max_train)


def check_sets(names: list[str], source: Any, resize: bool, sets: Any) -> None:
    from bench.datasets import evalsets, user_ood

    for name in names:
        spec, _ = evalsets.lookup(name, sets)
        if not spec.any_shape:
            raise UsageError(f"eval set {name} is made for MNIST (28x28 grey digits), not for {source.describe()}; "
                             "drop it (sets of any shape: your test part, ood:uniform, ood:gaussian, fgsm, pgd, uap, "
                             "fooling, occlusion:random-squares, your --ood sets)")
        path = user_ood.path_of(spec)
        if path is not None:
            read_ood(path, source.spec, resize, name)  # its shape, now rather than after training


def check_methods(methods: list[str], source: Any) -> None:
    from bench.methods import METHODS

    for m in methods:
        why = getattr(METHODS.get(m), "mnist_only", "")
        if why and source.shape != MNIST_SHAPE:
            raise UsageError(f"{m} works on 28x28 grey images only ({why}), not on {source.describe()}; "
                             "drop it from --methods")


def check_split(source: Any, folds: int, val_fraction: float, max_train: int) -> None:
    from bench.datasets.splits import fold_bounds, smallest_train_size

    spec = source.spec
    n = spec.n_train
    if folds > n:
        raise UsageError(f"folds={folds} is more than the {n} training images of {spec.name}; use fewer folds")
    n_val = min(hi - lo for lo, hi in zip(fold_bounds(n, folds), fold_bounds(n, folds)[1:])) if folds > 1 \
        else round(n * val_fraction)
    n_train = smallest_train_size(n, folds, val_fraction, max_train)
    if spec.n_test < 1 or n_val < 1 or n_train < 2:
        raise UsageError(f"--data {spec.name}: {spec.n_train + spec.n_test} images are too few for "
                         f"the split ({spec.n_test} test, {n_val} validation, {n_train} training); bench needs "
                         "at least 1 test, 1 validation and 2 training images: give more images")


def recorded_identity(manifest: dict[str, Any]) -> str:
    """The data identity a run's manifest records: a user's data sha256, else its benchmark's embedded data (a
    manifest written before ``benchmark`` existed is MNIST's)."""
    sha = (manifest.get("data") or {}).get("sha256")
    if sha:
        return sha
    from bench.datasets.benchmarks import BENCHMARKS

    name = (manifest.get("config") or {}).get("benchmark") or "mnist"
    return BENCHMARKS.get(name).data if name in BENCHMARKS.names() else name


_EMBEDDED_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


def check_resume(old_manifest: dict[str, Any] | None, source: Any, run_dir: Path) -> None:
    """--resume continues a run only on the data it was made with (same content identity)."""
    if not old_manifest:
        return
    old, new = recorded_identity(old_manifest), source.identity
    if old != new:
        was = _EMBEDDED_NAMES.get(old, f"data sha256 {old[:12]}")
        now = _EMBEDDED_NAMES.get(new, f"sha256 {new[:12]}")
        raise UsageError(f"cannot resume {run_dir}: it was run on {was}, the data now is {now}; drop --resume and "
                         "choose another --out")
