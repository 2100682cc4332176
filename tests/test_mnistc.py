"""MNIST-C: each corruption by hand-checkable properties on tiny inputs, determinism under the seed, the prefix
property of capped sets, the checksummed cache (a corrupted file is detected), bad names, and the "shift" report
group. Never generates a slow corruption on the full 10k (brightness and stripe stand in where the cache needs a
full set)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage import color

from _runs import write_run
from bench.datasets import evalsets, mnistc
from bench.datasets import mnistc_corruptions as cor
from bench.datasets import mnistc_lines as lines
from bench.datasets.evalsets import EvalContext
from bench.errors import UsageError
from bench.report import groups
from bench.report import tables as report
from bench.report.runs import load_runs

RANDOM = ("shot-noise", "impulse-noise", "glass-blur", "motion-blur", "shear", "rotate", "translate", "fog",
          "spatter", "dotted-line", "zigzag")
FIXED = ("scale", "brightness", "stripe", "canny-edges")  # no randomness: the seed must not matter


@pytest.fixture(scope="module")
def digits(mnist_test) -> np.ndarray:
    return mnist_test.images[:8].numpy()  # uint8 (8, 1, 28, 28)


def test_the_fifteen_corruptions_of_the_paper():
    assert len(mnistc.NAMES) == 15 and set(RANDOM) | set(FIXED) == set(mnistc.NAMES)
    assert evalsets.expand(["mnistc"]) == [f"mnistc:{n}" for n in mnistc.NAMES]


@pytest.mark.parametrize("name", mnistc.NAMES)
def test_each_corruption_is_uint8_changes_the_image_and_is_deterministic(name, digits):
    out = mnistc.corrupt(name, digits)
    assert out.dtype == np.uint8 and out.shape == (8, 1, 28, 28)
    assert np.array_equal(out, mnistc.corrupt(name, digits))  # same seed, same images
    changed = (out != digits).reshape(8, -1).any(axis=1)
    assert changed.all(), f"{name} left {int((~changed).sum())} of 8 images unchanged"
    other = mnistc.corrupt(name, digits, seed=mnistc.MNISTC_SEED + 1)
    assert np.array_equal(out, other) == (name in FIXED)


@pytest.mark.parametrize("name", ["shot-noise", "glass-blur", "zigzag"])
def test_capped_set_is_a_prefix_of_the_full_one(name, mnist_test):
    src = mnist_test.images[: 2 * mnistc.CHUNK].numpy()
    whole = mnistc.corrupt(name, src)
    n = mnistc.CHUNK + 7  # ends inside the second chunk
    capped = mnistc.mnistc_images(name, EvalContext(max_eval=n))  # no cache dir: generated in memory
    assert np.array_equal(capped, whole[:n])
    # and a chunk's images do not depend on the chunks after it
    assert np.array_equal(mnistc.corrupt(name, src[: mnistc.CHUNK]), whole[: mnistc.CHUNK])


# ------------------------------------------------------------------------------------------ hand-checked cases
def test_brightness_adds_half_to_value_as_the_hsv_round_trip():
    x = np.array([[[0.0, 0.2, 0.5, 0.7, 1.0]]])
    assert np.allclose(cor.brightness(x, None), [[[0.5, 0.7, 1.0, 1.0, 1.0]]])
    # the reference: grey -> RGB -> HSV, V + 0.5 clipped, -> RGB -> grey (scikit-image's conversions)
    img = np.random.default_rng(0).random((28, 28))
    hsv = color.rgb2hsv(color.gray2rgb(img))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + 0.5, 0, 1)
    assert np.allclose(cor.brightness(img[None], None)[0], color.rgb2gray(color.hsv2rgb(hsv)), atol=1e-12)


def test_stripe_inverts_columns_0_to_6_and_21_to_27():
    x = np.zeros((1, 28, 28))
    x[0, :, 10] = 0.25
    out = cor.stripe(x, None)[0]
    assert (out[:, :7] == 1).all() and (out[:, 21:] == 1).all()
    assert (out[:, 7:21] == x[0, :, 7:21]).all() and (out[:, 10] == 0.25).all()


def test_translate_moves_a_pixel_by_minus_the_inverse_map_offset():
    x = np.zeros((1, 28, 28))
    x[0, 10, 12] = 1.0
    m = np.eye(3)
    m[:2, 2] = 3.0, -3.0  # inverse map (col, row) -> (col + 3, row - 3): the content moves 3 left, 3 down
    out = cor.warp_each(x, [m])[0]
    assert out[13, 9] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)
    # the corruption itself: every image moved by (+-3, +-3), zeros shifted in
    digit = np.zeros((4, 28, 28))
    digit[:, 10:18, 10:18] = 1.0
    moved = cor.translate(digit, np.random.default_rng(0))
    for img in moved:
        rows, cols = np.nonzero(img > 0.5)
        assert rows.min() - 10 in (-3, 3) and cols.min() - 10 in (-3, 3) and img.sum() == pytest.approx(64)


def test_rotate_quarter_turn_about_the_centre_by_hand():
    # inverse map of R(pi/2) about (13.5, 13.5): input col = 27 - output row, input row = output col
    m = cor.rotation_matrix(math.pi / 2)
    assert np.allclose(m @ [13.5, 13.5, 1], [13.5, 13.5, 1])
    x = np.zeros((1, 28, 28))
    x[0, 5, 20] = 1.0  # row 5, col 20 -> output row 27 - 20 = 7, col 5
    out = cor.warp_each(x, [m])[0]
    assert out[7, 5] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


def test_rotate_and_shear_use_0_4_radians_with_a_random_sign():
    x = np.zeros((16, 28, 28))
    x[:, :, 13:15] = 1.0  # a vertical bar through the centre, full height
    # in output row 6 (7.5 above the centre) the bar's centre moves sideways by 7.5 sin(0.4) (shear) or about
    # 7.5 tan(0.4) (rotation), to the left or the right
    for fn, offset, tol in ((cor.shear, 7.5 * math.sin(0.4), 1e-9), (cor.rotate, 7.5 * math.tan(0.4), 0.3)):
        out = fn(x, np.random.default_rng(1))
        shifts = np.array([np.average(np.arange(28), weights=img[6]) - 13.5 for img in out])
        assert np.allclose(np.abs(shifts), offset, atol=tol), fn.__name__
        assert (shifts < 0).any() and (shifts > 0).any()  # both directions among 16 images


def test_shear_matrix_of_the_authors_scikit_image():
    # old skimage AffineTransform(shear=c): [[1, -sin c], [0, cos c]]; the bar's centre in output row y sits at
    # col 13.5 + sin(c) * (y - 13.5) (bilinear sampling keeps a bar's centroid)
    c = 0.4
    x = np.zeros((1, 28, 28))
    x[0, :, 13:15] = 1.0
    out = cor.warp_each(x, [cor.shear_matrix(c)])[0]
    for y in (0, 27):
        centroid = np.average(np.arange(28), weights=out[y])
        assert centroid == pytest.approx(13.5 + math.sin(c) * (y - 13.5), abs=1e-9)


def test_scale_shrinks_to_70_percent_about_the_centre():
    out = cor.scale(np.ones((1, 28, 28)), None)[0]
    # output x reads input 13.5 + (x - 13.5) / 0.7: inside [0, 27] for x in [4.05, 22.95]
    assert (out[5:23, 5:23] == 1).all()
    assert (out[:4] == 0).all() and (out[24:] == 0).all() and (out[:, :4] == 0).all() and (out[:, 24:] == 0).all()


def test_shot_noise_is_poisson_of_three_times_the_pixel_over_three():
    x = np.zeros((100, 28, 28))
    x[:, :, 14:] = 0.5
    out = cor.shot_noise(x, np.random.default_rng(0))
    assert (out[:, :, :14] == 0).all()  # Poisson(0) = 0
    assert set(np.unique(out * 3).round(9)) <= {0.0, 1.0, 2.0, 3.0}  # multiples of 1/3, clipped at 1
    # E[min(P/3, 1)] for P ~ Poisson(1.5): (1*p1 + 2*p2 + 3*(1 - p0 - p1 - p2)) / 3
    p = [math.exp(-1.5) * 1.5**k / math.factorial(k) for k in range(3)]
    expected = (p[1] + 2 * p[2] + 3 * (1 - sum(p))) / 3
    assert out[:, :, 14:].mean() == pytest.approx(expected, abs=0.005)


def test_impulse_noise_sets_17_percent_of_pixels_to_black_or_white():
    x = np.full((100, 28, 28), 0.5)
    out = cor.impulse_noise(x, np.random.default_rng(0))
    assert set(np.unique(out)) == {0.0, 0.5, 1.0}
    assert (out == 0).mean() == pytest.approx(0.085, abs=0.005) and (out == 1).mean() == pytest.approx(0.085, abs=0.005)


def test_line_intensity_by_hand():
    line = lines.line_from_points(0, 10, 27, 10)
    assert (line[10, :27] == 1).all() and line[10, 27] == 0  # ceil(27) = 27: the last column stays blank
    # ln(0.565217) = -0.570545
    assert line[11, 5] == pytest.approx(math.log(1 - 1 / 2.3) + 1) == pytest.approx(0.429455, abs=1e-6)
    assert (line[12] == 0).all() and (line[8] == 0).all()  # d = 2: log(1 - 2/2.3) + 1 < 0 -> 0
    assert not lines.line_from_points(3, 0, 3, 20).any()  # vertical: nothing, as in the reference


def test_dotted_line_blanks_every_other_column_pair():
    mask = lines.dotted_line_mask(10, 10)[10]
    on = [c for c in range(28) if mask[c] > 0]
    assert on == [2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26]


def test_zigzag_corners_of_a_horizontal_segment_by_hand():
    cs, rs = lines.zigzag_points(10.0, 10.0)
    # d = 23; corners at 2 + (2i+1)*2 for i = 0..5, rows 10 +- 2; then (2 + 23, 10 - 2 / (2 * (23 - 20)))
    assert np.allclose(cs, [2, 4, 8, 12, 16, 20, 24, 25])
    assert np.allclose(rs, [10, 12, 8, 12, 8, 12, 8, 10 - 1 / 3])


def test_motion_blur_kernel_and_direction_by_hand():
    k = cor.motion_kernel(10, 3)
    norm = math.fsum(math.exp(-i * i / 18) for i in range(21))
    assert len(k) == 21 and k[0] == pytest.approx(1 / norm) and k[5] == pytest.approx(math.exp(-25 / 18) / norm)
    x = np.zeros((2, 28, 28))
    x[:, 10, 15] = 1.0
    out = cor.motion_blur_at(x, np.array([0.0, 90.0]))
    # angle 0: output (r, c) sums input (r, c + i): the dot smears to the left, weight k[15 - c] at column c
    assert np.allclose(out[0, 10, :16], np.round(k[15::-1] * 255) / 255) and not out[0, 10, 16:].any()
    assert out[0].sum(axis=1)[[9, 11]].sum() == 0
    # angle 90: input (r + i, c): the smear goes up the column
    assert np.allclose(out[1, :11, 15], np.round(k[10::-1] * 255) / 255) and not out[1, 11:, 15].any()


def test_fog_plasma_is_normalised_and_fog_keeps_the_peak():
    m = cor.plasma_fractal(np.random.default_rng(0), 3, 64, 1.4)
    assert m.shape == (3, 64, 64) and np.allclose(m.min(axis=(1, 2)), 0) and np.allclose(m.max(axis=(1, 2)), 1)
    x = np.zeros((2, 28, 28))
    x[0, 5:20, 12:16] = 0.8
    out = cor.fog(x, np.random.default_rng(0))
    # (x + 3 f) * peak / (peak + 3) with f in [0, 1]: never above the peak; a blank image stays blank
    assert out[0].max() <= 0.8 + 1e-12 and out[0].min() >= 0 and not out[1].any()


def test_spatter_blends_towards_grey_63_where_the_mask_is_at_least_0_8():
    out = np.round(cor.spatter(np.zeros((50, 28, 28)), np.random.default_rng(0)) * 255)
    vals = set(np.unique(out))
    assert 0 in vals and len(vals) > 1 and all(v == 0 or 0.8 * 63 - 0.5 <= v <= 63 for v in vals)


@pytest.mark.e2e
def test_glass_blur_blurs_along_rows_only_like_the_reference():
    x = np.zeros((1, 28, 28))
    x[0, 14, 14] = 1.0
    blurred = cor._gauss_rows(x, 0.7)[0]
    assert blurred[:, 14].sum() == pytest.approx(1.0) and not np.delete(blurred, 14, axis=1).any()
    assert not cor.glass_blur(np.zeros((2, 28, 28)), np.random.default_rng(0)).any()


def test_canny_edges_of_a_square_are_binary_and_on_its_border():
    x = np.zeros((1, 28, 28))
    x[0, 8:20, 8:20] = 1.0
    out = cor.canny_edges(x, None)[0]
    assert set(np.unique(out)) == {0.0, 1.0}
    rows, cols = np.nonzero(out)
    assert rows.min() >= 6 and rows.max() <= 21 and not out[11:17, 11:17].any()
    assert not cor.canny_edges(np.zeros((1, 28, 28)), None).any()


# ------------------------------------------------------------------------------------------------ cache
def test_cache_written_once_with_checksum_then_read(tmp_path, monkeypatch, mnist_test):
    ctx = EvalContext(cache_dir=tmp_path)
    first = mnistc.mnistc_images("brightness", ctx)
    path = mnistc.cache_path(tmp_path, "brightness")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == mnistc.sha256(np.load(path)) and meta["shape"] == [10_000, 1, 28, 28]
    expected = np.clip(mnist_test.images.numpy().astype(int) + 128, 0, 255)  # +0.5 * 255 = 127.5, rounded up
    assert np.abs(first.astype(int) - expected).max() <= 1
    monkeypatch.setattr(mnistc, "corrupt", lambda *a, **k: pytest.fail("regenerated a valid cache entry"))
    again = mnistc.mnistc_images("brightness", EvalContext(cache_dir=tmp_path, max_eval=50))
    assert np.array_equal(again, first[:50])  # a capped set reads the cached full set


def test_capped_run_with_a_cache_writes_the_full_set_once(tmp_path, monkeypatch):
    capped = mnistc.mnistc_images("stripe", EvalContext(cache_dir=tmp_path, max_eval=40))
    full = np.load(mnistc.cache_path(tmp_path, "stripe"))
    assert capped.shape == (40, 1, 28, 28) and full.shape == (10_000, 1, 28, 28) and np.array_equal(capped, full[:40])
    # the fast corruptions reproduce the pinned reference data exactly (same code, any machine)
    assert mnistc.sha256(full) == mnistc.REFERENCE_SHA256["stripe"]
    monkeypatch.setitem(mnistc.REFERENCE_SHA256, "brightness", "0" * 64)
    with pytest.warns(UserWarning, match="differs from bench's reference data"):
        mnistc.mnistc_images("brightness", EvalContext(cache_dir=tmp_path))


def test_corrupted_cache_file_is_detected_and_regenerated(tmp_path):
    ctx = EvalContext(cache_dir=tmp_path)
    good = mnistc.mnistc_images("stripe", ctx)
    path = mnistc.cache_path(tmp_path, "stripe")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip one pixel's bits
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = mnistc.mnistc_images("stripe", ctx)
    assert np.array_equal(again, good)
    assert mnistc.load_cached(path) is not None  # rewritten whole
    path.with_suffix(".json").write_text("{}")  # a damaged checksum file counts as corrupt too
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert mnistc.load_cached(path) is None


# ------------------------------------------------------------------------------------------------ eval sets
def test_eval_set_rows_are_id_with_the_test_labels(mnist_test):
    data = evalsets.build("mnistc:rotate", EvalContext(max_eval=30))
    assert data.images.dtype == torch.uint8 and data.images.shape == (30, 1, 28, 28)
    assert torch.equal(data.labels, mnist_test.labels[:30])
    assert (data.name, data.kind, data.shift) == ("mnistc:rotate", "id", "mnistc")


@pytest.mark.parametrize("bad, hint", [("shot_noise", "did you mean mnistc:shot-noise"),
                                      ("fogg", "did you mean mnistc:fog"), ("xyz", "known: shot-noise")])
def test_unknown_corruption_is_a_one_line_error_at_lookup(bad, hint):
    with pytest.raises(UsageError, match=hint) as e:
        evalsets.expand([f"mnistc:{bad}"])  # config time: before any training
    assert "\n" not in str(e.value)


def test_unknown_corruption_from_the_cli_exits_2_before_training(tmp_path, capsys):
    from bench.cli import main

    code = main(["run", "--profile", "smoke", "--methods", "msp", "--datasets", "mnistc:zigzg", "--device", "cpu",
                 "--no-progress", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean mnistc:zigzag" in err and err.count("\n") == 1
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ report
def test_shift_group_table_with_a_hand_checked_mean(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    rows = runs.rows
    # relabel the two FGSM sets as two MNIST-C corruptions: accuracy per seed i is 40 + i and 10 + i for alpha
    fg = rows["shift"] == "fgsm"
    rows.loc[fg, "eval_set"] = rows.loc[fg, "eval_set"].map({"fgsm:eps=0.1": "mnistc:fog",
                                                             "fgsm:eps=0.3": "mnistc:stripe"})
    rows.loc[fg, "shift"] = "mnistc"
    rows.loc[fg, "severity"] = ""
    assert groups.report_group("mnistc:fog", "mnistc") == "shift"  # as the mnistc family declares
    tables = report.build_tables(runs)
    shift = next(t for t in tables if t.key == "shift")
    assert [t.key for t in tables].index("shift") < [t.key for t in tables].index("cost")
    sets = list(dict.fromkeys(c.eval_set for c in shift.columns))
    assert sets == ["mnistc:fog", "mnistc:stripe", "mean"]
    mean = next(shift.cells[("alpha", j)] for j, c in enumerate(shift.columns)
                if c.eval_set == "mean" and c.metric == "accuracy")
    assert mean.mean == pytest.approx((40 + 10) / 2 + 1) and mean.n == 3  # per seed (40+i + 10+i)/2, i = 0, 1, 2
    assert "mean = average over the group's sets per seed" in shift.caption()
