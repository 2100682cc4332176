"""notMNIST (Yaroslav Bulatov, 2011): the 10,000-glyph test sample in MNIST's IDX format published in the public
repository davidflanagan/notMNIST-to-MNIST. No data licence is stated there, so bench never ships it: it is read from
the user's data folder (``--data-dir`` / ``BENCH_DATA``) or fetched from that repository when online, and every file
is checked against the md5 of its decompressed content before use.

Accepted layouts under the data folder (torchvision's MNIST layout first, so ``--data-dir ../shared/data`` works):
``notMNIST/raw/<file>``, ``notMNIST/<file>`` and ``<file>``, each as ``.gz`` or decompressed.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import torch

from bench.datasets.idx import parse_idx
from bench.datasets.mnist import ImageSet
from bench.errors import DataError
from bench.utils import atomic_write_bytes

FOLDER = "notMNIST"
# md5 of the decompressed files (the .gz wrappers vary with the gzip that wrote them)
FILES = {
    "images": ("t10k-images-idx3-ubyte", "1e78b07d677d6e4de2c8857bafff012e"),
    "labels": ("t10k-labels-idx1-ubyte", "b10b3ef34b4e468313a7b24c216c6a53"),
}
# pinned to the commit that added the files, so the content the hashes name cannot move under the URL
URL = "https://raw.githubusercontent.com/davidflanagan/notMNIST-to-MNIST/c58c29ff93d7b8c809c449b380a232f9f39909fd/{}.gz"
N_TEST = 10_000
# The last N_VAL glyphs are a validation part for methods that fit on OOD data (mdsens.val_ood=notmnist), as OpenOOD
# fits its MDS weights on a notMNIST list disjoint from its test list; ood:notmnist-test is the other 9,000.
N_VAL = 1_000


def candidates(data_dir: Path, name: str) -> list[Path]:
    """Where a file may lie, in the order they are tried."""
    return [d / f"{name}{ext}" for d in (data_dir / FOLDER / "raw", data_dir / FOLDER, data_dir) for ext in (".gz", "")]


def find(data_dir: Path, name: str) -> Path | None:
    return next((p for p in candidates(data_dir, name) if p.is_file()), None)


def present(data_dir: str | Path) -> bool:
    """Both files are in the data folder (their content is checked when the set is built, not here)."""
    return all(find(Path(data_dir), name) is not None for name, _ in FILES.values())


def _check(data: bytes, md5: str, source: str) -> bytes:
    if hashlib.md5(data).hexdigest() != md5:
        raise DataError(f"{source} is not the notMNIST file bench expects (md5 of its content is not {md5}); "
                        f"delete it and place the files of davidflanagan/notMNIST-to-MNIST there")
    return data


def _read(path: Path) -> bytes:
    import gzip
    import zlib

    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}); delete it and place the files of "
                        "davidflanagan/notMNIST-to-MNIST there") from None


def _fetch(url: str) -> bytes:
    """The bytes at ``url`` (tests replace this; bench's tests never download)."""
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (a fixed https URL)
        return r.read()


def _download(data_dir: Path, name: str, md5: str) -> Path:
    import gzip

    url = URL.format(name)
    try:
        packed = _fetch(url)
        content = gzip.decompress(packed)
    except (urllib.error.URLError, OSError, EOFError, ValueError) as e:
        raise DataError(f"ood:notmnist could not be downloaded from {url} ({type(e).__name__}); offline, place "
                        f"{name}.gz under {data_dir / FOLDER / 'raw'}/ (--data-dir or BENCH_DATA)") from None
    _check(content, md5, f"the download {url}")  # verified before anything is written
    dest = data_dir / FOLDER / "raw" / f"{name}.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, packed)
    return dest


def load(data_dir: str | Path, allow_download: bool = True) -> ImageSet:
    """The 10,000 test glyphs (uint8, (N, 1, 28, 28)) and their letters A-J as labels 0-9."""
    root = Path(data_dir)
    paths = {}
    for part, (name, md5) in FILES.items():
        path = find(root, name)
        if path is None:
            if not allow_download:
                raise DataError(f"ood:notmnist is not in {root} and downloads are off; place {name}.gz (from the "
                                f"GitHub repository davidflanagan/notMNIST-to-MNIST) under {root / FOLDER / 'raw'}/")
            path = _download(root, name, md5)
        paths[part] = path
    arrays = {part: parse_idx(_check(_read(p), FILES[part][1], str(p)), str(p)) for part, p in paths.items()}
    images, labels = arrays["images"], arrays["labels"].long()
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or len(images) != len(labels):
        raise DataError(f"{paths['images']} holds {tuple(images.shape)} images for {len(labels)} labels; expected "
                        "(N, 28, 28) and one label each")  # the hashes pin the real files; this guards edited ones
    return ImageSet(images.unsqueeze(1).to(torch.uint8), labels)


def split(glyphs: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(test, validation): the glyphs before the last ``N_VAL`` and those ``N_VAL`` (the file is already a random
    sample of notMNIST, so a fixed cut is a random split)."""
    cut = len(glyphs) - N_VAL
    if cut <= 0:
        raise DataError(f"notMNIST holds {len(glyphs)} glyphs; its validation part needs more than {N_VAL}")
    return (ImageSet(glyphs.images[:cut], glyphs.labels[:cut]),
            ImageSet(glyphs.images[cut:], glyphs.labels[cut:]))
