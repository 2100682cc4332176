"""The embedded data: IDX parsing, checksums, one-line errors for missing or corrupt files, and splits."""

from __future__ import annotations

import gzip
import shutil
import struct

import pytest
import torch

from bench.datasets.idx import parse_idx, read_idx
from bench.datasets.mnist import DATA_ROOT, FILES, load_embedded, to_float
from bench.datasets.splits import SplitSpec, split_indices
from bench.errors import DataError, UsageError


def test_embedded_sets_have_expected_shapes_and_labels(mnist_train, mnist_test):
    assert mnist_train.images.shape == (60_000, 1, 28, 28) and mnist_train.images.dtype == torch.uint8
    assert mnist_test.images.shape == (10_000, 1, 28, 28)
    # Known class counts of the MNIST test set (LeCun's distribution).
    assert torch.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    fashion = load_embedded("fashion", "test")
    assert fashion.images.shape == (10_000, 1, 28, 28) and torch.bincount(fashion.labels).tolist() == [1000] * 10


def test_parse_idx_by_hand():
    # magic 0x00000803 (uint8, 3 dims), dims 2x1x2, then 4 bytes
    data = bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 1, 2) + bytes([1, 2, 3, 4])
    t = parse_idx(data)
    assert t.shape == (2, 1, 2) and t.flatten().tolist() == [1, 2, 3, 4]
    big = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", -5, 70000)
    assert parse_idx(big).tolist() == [-5, 70000]  # big-endian int32


@pytest.mark.parametrize("bad, msg", [
    (bytes([1, 2, 3]), "bad magic"),
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + bytes(4), "truncated"),
    (bytes([0, 0, 8, 1]), "truncated"),
])
def test_parse_idx_rejects_malformed(bad, msg):
    with pytest.raises(DataError, match=msg):
        parse_idx(bad, "x.idx")


@pytest.fixture
def label_copy(tmp_path):
    rel, md5 = FILES["mnist"]["test_labels"]
    dst = tmp_path / "labels.gz"
    shutil.copy(DATA_ROOT / rel, dst)
    return dst, md5


def test_checksum_accepts_intact_copy(label_copy):
    path, md5 = label_copy
    assert read_idx(path, md5).shape == (10_000,)


def test_corrupt_content_is_caught_by_checksum(label_copy):
    path, md5 = label_copy
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] ^= 0xFF  # one flipped label byte: still a valid IDX file, so only the checksum can tell
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"labels.gz is corrupt \(md5"):
        read_idx(path, md5)


def test_broken_gzip_and_missing_file_are_one_line_errors(label_copy, tmp_path):
    path, md5 = label_copy
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="is corrupt") as e:
        read_idx(path, md5)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="is missing"):
        read_idx(tmp_path / "nope.gz", md5)


def test_to_float_range_and_no_mutation():
    x = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32 and x.tolist() == [[0, 255, 51]]
    torch.testing.assert_close(y, torch.tensor([[0.0, 1.0, 0.2]]))


def test_split_is_seeded_disjoint_and_recorded():
    a_train, a_val = split_indices(1000, SplitSpec(val_fraction=0.1, split_seed=3))
    b_train, b_val = split_indices(1000, SplitSpec(val_fraction=0.1, split_seed=3))
    assert torch.equal(a_val, b_val) and len(a_val) == 100 and len(a_train) == 900
    assert len(set(a_train.tolist()) | set(a_val.tolist())) == 1000
    c_train, c_val = split_indices(1000, SplitSpec(val_fraction=0.1, split_seed=4))
    assert not torch.equal(a_val, c_val)
    assert SplitSpec(val_fraction=0.1, split_seed=3).split_id != SplitSpec(val_fraction=0.1, split_seed=4).split_id


def test_kfold_validation_parts_partition_the_data():
    vals = [split_indices(103, SplitSpec(folds=5, fold=f))[1] for f in range(5)]
    assert sorted(torch.cat(vals).tolist()) == list(range(103))
    assert {len(v) for v in vals} <= {20, 21}
    tr, va = split_indices(103, SplitSpec(folds=5, fold=2))
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == 103


def test_bad_split_specs():
    with pytest.raises(UsageError):
        SplitSpec(folds=5, fold=5)
    with pytest.raises(UsageError):
        SplitSpec(val_fraction=1.5)


def test_smallest_train_size_is_what_split_indices_cuts():
    """The preflight's training-split size, computed without permutations, equals the smallest training part that
    split_indices gives over every fold (uneven folds, a cap, one validation split)."""
    from bench.datasets.splits import SplitSpec, smallest_train_size, split_indices

    for n, folds, frac, cap in [(60000, 1, 0.1, 0), (60000, 5, 0.1, 0), (1797, 7, 0.1, 0), (101, 3, 0.1, 0),
                                (60000, 5, 0.1, 20000), (103, 1, 0.33, 0)]:
        sizes = [len(split_indices(n, SplitSpec(frac, 0, folds, f, cap))[0]) for f in range(folds)]
        assert smallest_train_size(n, folds, frac, cap) == min(sizes)
