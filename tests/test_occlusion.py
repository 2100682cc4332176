"""PMNIST cuts (pinned against the reference code's pixel conditions) and the random-squares severity sweep."""

from __future__ import annotations

import pytest
import torch

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.occlusion import SQUARE, pmnist_mask, random_square_masks
from bench.errors import UsageError

# The removal conditions of nmilosev/negative-learning's datagen.py, with x = row and y = column (0-based).
REFERENCE = {
    "horizontal": lambda x, y: x < 14,
    "vertical": lambda x, y: y < 14,
    "diagonal": lambda x, y: (x < 14 and y > 14) or (x > 14 and y < 14),
    "triple": lambda x, y: (5 < x < 15 and 5 < y < 15) or (17 < x < 27 and 10 < y < 20) or (7 < x < 17 and 16 < y < 26),
}
COUNTS = {"horizontal": 14 * 28, "vertical": 28 * 14, "diagonal": 2 * 14 * 13, "triple": 3 * 9 * 9}


@pytest.mark.parametrize("cut", list(REFERENCE))
def test_pmnist_masks_pin_the_removed_pixels(cut):
    mask = pmnist_mask(cut)
    expected = {(x, y) for x in range(28) for y in range(28) if REFERENCE[cut](x, y)}
    assert {tuple(p) for p in mask.nonzero().tolist()} == expected
    assert int(mask.sum()) == COUNTS[cut]


def test_pmnist_keeps_the_middle_row_and_column_in_the_diagonal_cut():
    mask = pmnist_mask("diagonal")
    assert not mask[14].any() and not mask[:, 14].any()
    assert mask[0, 27] and mask[27, 0] and not mask[0, 0] and not mask[27, 27]


@pytest.mark.parametrize("cut", list(REFERENCE))
def test_pmnist_set_zeroes_only_the_cut(cut, mnist_test):
    ctx = EvalContext(max_eval=64)
    data = evalsets.build(f"pmnist:{cut}", ctx)
    mask = pmnist_mask(cut)
    clean = mnist_test.images[:64]
    assert data.images.dtype == torch.uint8 and data.images.shape == clean.shape
    assert (data.images[:, 0][:, mask] == 0).all()
    assert torch.equal(data.images[:, 0][:, ~mask], clean[:, 0][:, ~mask])
    assert torch.equal(data.labels, mnist_test.labels[:64])
    assert (data.kind, data.shift, data.severity) == ("id", "pmnist", cut)
    assert data.extra["removed_fraction"] == pytest.approx(100 * COUNTS[cut] / 784)


def test_pmnist_family_expands_to_the_four_cuts_and_rejects_others():
    assert evalsets.expand(["pmnist"]) == [f"pmnist:{c}" for c in ("horizontal", "vertical", "diagonal", "triple")]
    with pytest.raises(UsageError, match="horizontal"):
        evalsets.build("pmnist:quadruple", EvalContext(max_eval=4))


def test_random_squares_reach_the_fraction_and_are_seeded():
    for frac in (0.1, 0.3, 0.5):
        masks = random_square_masks(500, frac)
        removed = masks.flatten(1).float().mean(1)
        assert (removed >= frac).all() and (removed < frac + SQUARE * SQUARE / 784).all()
        assert torch.equal(masks, random_square_masks(500, frac))
    assert not torch.equal(random_square_masks(50, 0.3), random_square_masks(50, 0.3, seed=1))


def test_random_squares_set_is_a_prefix_of_the_full_set_and_sweeps(mnist_test):
    small = evalsets.build("occlusion:random-squares=0.3", EvalContext(max_eval=20))
    larger = evalsets.build("occlusion:random-squares=0.3", EvalContext(max_eval=40))
    assert torch.equal(small.images, larger.images[:20])
    assert (small.shift, small.severity, small.kind) == ("occlusion", "0.3", "id")
    zeroed = (small.images == 0) & (mnist_test.images[:20] > 0)
    assert zeroed.any()
    sweep = evalsets.expand(["occlusion:random-squares"])
    assert len(sweep) >= 4 and all(s.startswith("occlusion:random-squares=") for s in sweep)
    fracs = [evalsets.build(s, EvalContext(max_eval=50)).extra["removed_fraction"] for s in sweep]
    assert fracs == sorted(fracs)


@pytest.mark.parametrize("bad", ["occlusion:random-squares=1.5", "occlusion:random-squares=x", "occlusion:blobs=0.2",
                                 "occlusion:random-squares"])
def test_random_squares_bad_names_raise_usage_errors(bad):
    with pytest.raises(UsageError):
        evalsets.build(bad, EvalContext(max_eval=4))
