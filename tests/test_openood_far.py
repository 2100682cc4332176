"""OpenOOD v1's far-OOD image folders (Texture, TinyImageNet, Places365) read from the data folder: grey, shorter
side to 28, centre crop; small generated images stand in for the real sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.datasets.evalsets import EvalContext, build
from bench.errors import DataError


def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def texture(tmp_path):
    """DTD's layout: images/<class>/*.jpg (here PNG, lossless, so the expected pixels can be computed)."""
    g = np.random.default_rng(0)
    wide = g.integers(0, 256, size=(40, 64, 3), dtype=np.uint8)  # RGB, landscape
    tall = g.integers(0, 256, size=(50, 30), dtype=np.uint8)  # grey, portrait
    save(tmp_path / "texture/images/banded/b_1.png", wide)
    save(tmp_path / "texture/images/banded/a_2.png", tall)
    save(tmp_path / "texture/images/zigzag/c.png", g.integers(0, 256, size=(28, 28), dtype=np.uint8))
    (tmp_path / "texture/labels.txt").write_text("not an image")
    return tmp_path, wide, tall


def test_folder_images_become_grey_28x28_as_openood_resizes_them(texture):
    root, wide, tall = texture
    d = build("ood:texture", EvalContext(data_dir=root))
    assert d.images.shape == (3, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.kind == "ood" and d.group == "far" and d.labels.tolist() == [-1] * 3
    # sorted by path below the folder: banded/a_2, banded/b_1, zigzag/c
    grey = np.asarray(Image.fromarray(wide).convert("L"))
    by_hand = Image.fromarray(grey).resize((44, 28), Image.BILINEAR)  # shorter side 40 -> 28, 64 -> int(64*28/40)
    left = int(round((44 - 28) / 2.0))
    assert np.array_equal(d.images[1, 0].numpy(), np.asarray(by_hand)[:, left : left + 28])
    tall_small = np.asarray(Image.fromarray(tall).resize((28, 46), Image.BILINEAR))  # 50 * 28 / 30 = 46.7 -> 46
    top = int(round((46 - 28) / 2.0))
    assert np.array_equal(d.images[0, 0].numpy(), tall_small[top : top + 28])


def test_a_missing_folder_names_where_to_put_it(tmp_path):
    for name, folder in (("ood:texture", "texture"), ("ood:tin", "tin"), ("ood:places365", "places365")):
        with pytest.raises(DataError, match="is not in") as e:
            build(name, EvalContext(data_dir=tmp_path))
        assert f"{tmp_path / folder}/" in str(e.value) and "\n" not in str(e.value)


def test_an_unreadable_image_is_named(texture):
    root, _, _ = texture
    (root / "texture/images/zigzag/broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg is not a readable image"):
        build("ood:texture", EvalContext(data_dir=root))


def test_max_eval_and_default_sets(texture):
    root, _, _ = texture
    assert len(build("ood:texture", EvalContext(data_dir=root, max_eval=2)).images) == 2
    assert _defaults(root) == [*_defaults(None), "ood:texture"]
    (root / "tin").mkdir()  # an empty folder is not a set
    assert "ood:tin" not in _defaults(root)


def _defaults(data_dir):
    """A default MNIST run's eval sets with ``data_dir`` as its data folder (datasets/benchmarks.py)."""
    from bench.datasets.benchmarks import run_defaults
    from bench.datasets.source import embedded

    return run_defaults("mnist", embedded(), None, data_dir)

