"""Bad input on the surfaces issue 35 tried (bench score, --data, images): a one-line error, exit code 2 or 1 in the
CLI and a typed exception in Python, before any work; never a traceback or an allocation the file asked for."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from _tiny import run_main
from bench.errors import BenchError, UsageError


def _one_line(code: int, err: str, expect: int, text: str) -> None:
    assert code == expect and text in err and len(err.strip().splitlines()) == 1, err


def test_score_on_an_npy_named_npz(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 10)))
    _one_line(*run_main(["score", str(path)])[::2], 2, "single .npy array, not an .npz")


def test_score_on_an_npz_whose_header_claims_a_huge_array(tmp_path):
    """A 100-byte .npz whose logits header declares 50,000,000 x 1,000 float64 (373 GiB): refused from the header."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (50_000_000, 1000)})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("logits.npy", buf.getvalue())
        z.writestr("labels.npy", buf.getvalue())
    _one_line(*run_main(["score", str(path)])[::2], 2, "372.5 GiB), more than bench reads (4 GiB")


def test_score_on_empty_and_float32_overflowing_outputs(tmp_path):
    import bench

    with pytest.raises(UsageError, match="has no rows"):
        bench.score(np.zeros((0, 10)), np.zeros(0, dtype=int))
    with pytest.raises(UsageError, match="beyond float32's range"):
        bench.score(np.full((3, 10), 1e300), np.zeros(3, dtype=int))
    empty = tmp_path / "e.npz"
    np.savez(empty, logits=np.zeros((0, 10)), labels=np.zeros(0, dtype=int))
    _one_line(*run_main(["score", str(empty)])[::2], 2, "has no rows")


def test_data_with_one_huge_label_is_refused_without_building_its_classes(tmp_path):
    from bench.datasets import user_data

    y = np.arange(40) % 2
    y[0] = 100_000_000
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((40, 8, 8), np.uint8), labels=y)
    with pytest.raises(UsageError, match="label 100000000 with only 40 images; labels skip class 2"):
        user_data.load(f"d={path}")


def _png_header_only(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("megapixels", [100, 196])  # above Pillow's limit (89M: it warns) and twice it (it raises)
def test_a_decompression_bomb_image_is_one_line(tmp_path, megapixels):
    from bench.datasets.image_files import read_image

    side = int((megapixels * 1e6) ** 0.5)
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(BenchError, match="more pixels than bench reads"):
        read_image(path)
    code, _, err = run_main(["predict", "--run", str(tmp_path), "--method", "msp", str(path)])  # read first
    _one_line(code, err, 1, "more pixels than bench reads")
