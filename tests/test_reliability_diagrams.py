"""Per-method reliability diagrams: the drawn bars are the hand-counted bins, and `bench report --plots` writes one
file per method."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cli import main
from tests._runs import write_run

pytest.importorskip("matplotlib")


def test_bar_heights_are_the_hand_counted_bins():
    from bench.report.reliability_diagrams import reliability_figure

    probs = np.array([[0.95, 0.05], [0.97, 0.03], [0.38, 0.62], [0.55, 0.45], [0.58, 0.42]])
    labels = np.array([0, 1, 1, 1, 0])
    # 15 right-closed bins of width 1/15 on the max probability: 0.95 and 0.97 -> bin 14 (14/15 = 0.933, 1], one
    # right, one wrong; 0.62 -> bin 9 (0.600, 0.667], right; 0.55 and 0.58 -> bin 8 (0.533, 0.600], one wrong
    # (0.55 predicts class 0, the label is 1), one right
    count = np.zeros(15)
    count[[8, 9, 14]] = [2, 1, 2]
    acc = np.zeros(15)
    acc[[8, 9, 14]] = [0.5, 1.0, 0.5]
    fig = reliability_figure("m", probs, labels)
    top, bottom = fig.axes
    np.testing.assert_allclose([b.get_height() for b in top.containers[0]], acc)
    np.testing.assert_allclose([b.get_height() for b in bottom.containers[0]], count)
    # the gap bar of bin 14 spans accuracy 0.5 up to the mean confidence 0.96
    gap = top.containers[1][14]
    assert gap.get_y() == pytest.approx(0.5) and gap.get_height() == pytest.approx(0.46)
    # ECE = (2 |0.5 - 0.565| + 1 |1 - 0.62| + 2 |0.5 - 0.96|) / 5 = (0.13 + 0.38 + 0.92) / 5 = 28.6%
    assert "ECE 28.60%" in top.get_title() and "5 images" in top.get_title()
    assert sorted(t.get_text() for t in top.texts) == ["1", "2", "2"]  # the counts printed above the bars


def test_report_writes_one_reliability_diagram_per_method(tmp_path, capsys):
    run = write_run(tmp_path, predictions=True)
    assert main(["report", str(run), "--plots", str(tmp_path / "plots")]) == 0
    written = {p.name for p in (tmp_path / "plots").iterdir()}
    for m in ("alpha", "beta", "gamma"):
        assert {f"reliability_{m}.png", f"reliability_{m}.pdf"} <= written
    assert (tmp_path / "plots" / "reliability_alpha.png").stat().st_size > 0
    assert main(["report", str(run), "--groups", "cost", "--plots", str(tmp_path / "cost-only")]) == 0
    assert not any(p.name.startswith("reliability") for p in (tmp_path / "cost-only").iterdir())
