"""User OOD sets (--ood NAME=PATH): folder / .npz / IDX readers, greyscale + resize rules, clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.user_ood import parse_spec, read_images, specs, to_grey28
from bench.errors import DataError, UsageError


def test_folder_of_images_is_greyscaled_and_resized(tmp_path):
    Image.new("RGB", (56, 40), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("L", (28, 28), 77).save(tmp_path / "a.bmp")
    (tmp_path / "notes.txt").write_text("ignored")
    x = read_images(tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (2, 1, 28, 28)
    assert (x[0] == 77).all()  # sorted by name: a.bmp first
    assert (x[1].int() - 76).abs().max() <= 1  # pure red -> luma 0.299 * 255


def test_npz_shapes_and_dtypes(tmp_path):
    nhwc = np.zeros((3, 28, 28, 3), dtype=np.uint8)
    nhwc[..., 1] = 255
    np.savez(tmp_path / "a.npz", images=nhwc, other=np.ones(2))
    x = read_images(tmp_path / "a.npz")
    assert x.shape == (3, 1, 28, 28) and (x.int() - 150).abs().max() <= 1  # 0.587 * 255 = 149.7
    np.savez(tmp_path / "b.npz", np.full((2, 1, 14, 14), 0.5, dtype=np.float32))
    y = read_images(tmp_path / "b.npz")
    assert y.shape == (2, 1, 28, 28) and ((y.int() - 128).abs() <= 1).all()


def test_idx_file(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 28, 28).astype(np.uint8)
    data = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 28, 28) + arr.tobytes()
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    x = read_images(tmp_path / "x-idx3-ubyte.gz")
    assert torch.equal(x[:, 0], torch.from_numpy(arr))


def test_unreadable_inputs_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_images(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png is not a readable image"):
        read_images(bad)
    np.savez(tmp_path / "f.npz", images=np.full((2, 28, 28), 3.0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        read_images(tmp_path / "f.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 28, 28)), b=np.zeros((1, 28, 28)))
    with pytest.raises(DataError, match="'images' or 'x'"):
        read_images(tmp_path / "two.npz")
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(DataError, match="neither"):
        read_images(tmp_path / "junk.bin")
    with pytest.raises(DataError, match="expected images shaped"):
        to_grey28(np.zeros((2, 5, 28, 28), dtype=np.uint8), "arr")


def test_user_sets_live_in_the_runs_registry_names_paths_and_collisions(tmp_path):
    from bench.datasets.source import embedded, run_sets

    before = list(evalsets.EVAL_SETS.names())
    Image.new("L", (28, 28), 10).save(tmp_path / "a.png")
    assert parse_spec(f"mine={tmp_path}") == ("mine", tmp_path)
    sets = run_sets(embedded(), [f"mine={tmp_path}"])
    assert list(specs([f"ood:mine={tmp_path}"])) == ["ood:mine"]  # the ood: prefix is optional
    data = evalsets.build("ood:mine", EvalContext(sets=sets))
    assert (data.kind, data.group, data.shift) == ("ood", "user", "ood")
    assert data.images.shape == (1, 1, 28, 28) and (data.labels == -1).all()
    assert "ood:mine" in evalsets.offline_sets(sets)
    assert evalsets.EVAL_SETS.names() == before and "ood:mine" not in evalsets.offline_sets()  # never global
    for bad, match in [("noequals", "malformed"), ("a b=x", "malformed"),
                       (f"x={tmp_path / 'missing'}", "does not exist")]:
        with pytest.raises(UsageError, match=match):
            specs([bad])
    with pytest.raises(UsageError, match="built-in"):
        run_sets(embedded(), [f"fashion={tmp_path}"])
    with pytest.raises(UsageError, match="given twice"):
        specs([f"a={tmp_path}", f"a={tmp_path}"])
