"""Dynamic adversarial data collection: preprocessing of drawings, the SQLite collection (transactions, concurrent
writers), the dadc:RUN eval set, the page's logic without a browser, and fine-tuning rounds."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from _dadc import data_url, make_run, png_bytes, stroke
from bench.cli import main
from bench.dadc import preprocess as pp
from bench.dadc.store import SCHEMA_VERSION, DadcStore, ModelPrediction, check_label
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.errors import DataError, UsageError

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


# --- preprocessing -------------------------------------------------------------------------------------------
def ink_box(img: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero((img > 0.05).any(1)), np.flatnonzero((img > 0.05).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_square_in_a_corner_is_scaled_to_20_and_centred_by_mass():
    grey = np.zeros((200, 300), dtype=np.float32)
    grey[10:70, 220:280] = 1.0  # a 60x60 square far from the centre
    img = pp.to_mnist(grey)
    assert img.shape == (28, 28) and img.dtype == np.float32 and img.min() >= 0 and img.max() == pytest.approx(1)
    assert ink_box(img) == (20, 20)
    cy, cx = pp.centre_of_mass(img)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
    assert img[4:24, 4:24].min() > 0.9  # symmetric shape: exactly the centre 20x20 block


def test_aspect_ratio_is_kept_and_a_lopsided_digit_is_centred_by_mass_not_by_box():
    grey = np.zeros((280, 280), dtype=np.float32)
    grey[40:240, 130:150] = 1.0  # 200 x 20 bar: 20 x 2 after resizing
    h, w = ink_box(pp.to_mnist(grey))
    assert h == 20 and 2 <= w <= 4  # Lanczos rings a pixel either side
    ell = np.zeros((280, 280), dtype=np.float32)
    ell[20:260, 20:60] = 1.0  # an L: most mass in the vertical stroke
    ell[220:260, 20:260] = 1.0
    img = pp.to_mnist(ell)
    cy, cx = pp.centre_of_mass(img)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
    cols = np.flatnonzero((img > 0.05).any(0))
    assert (cols[0] + cols[-1]) / 2 > 13.5 + 1  # the box itself is off-centre: centring is by mass


def test_dark_ink_on_light_paper_is_inverted():
    grey = np.zeros((100, 100), dtype=np.float32)
    grey[20:80, 45:55] = 1.0
    np.testing.assert_allclose(pp.to_mnist(1.0 - grey), pp.to_mnist(grey), atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.05])
def test_blank_canvas_is_rejected(value):
    with pytest.raises(DataError, match="blank"):
        pp.to_mnist(np.full((280, 280), value, dtype=np.float32))
    with pytest.raises(DataError, match="empty"):
        pp.preprocess("")


def test_canvas_data_url_round_trip_and_transparency_is_black():
    img = pp.preprocess(data_url(stroke()))
    assert ink_box(img)[0] == 20
    rgba = np.zeros((50, 50, 4), dtype=np.uint8)  # a transparent canvas with an opaque white stroke
    rgba[10:40, 22:28] = 255
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    assert ink_box(pp.preprocess(buf.getvalue()))[0] == 20
    assert np.array_equal(pp.from_png(pp.to_png(img)), np.round(img * 255).astype(np.uint8))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height grey pixels (and holds none): decoding it would fail."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, msg", [
    (_png_header(3000, 20), "3000x20 pixels; the limit is 2048"),
    (_png_header(100_000, 100_000), "far too many pixels; the limit is 2048"),
    (_png_header(4, 4), "at least 8 pixels"),
    (b"\x00" * (pp.MAX_BYTES + 1), "too large"),
    (b"GIF89a not really", "not a readable image"),
    (b"/etc/passwd", "not a readable image"),
    (b"", "empty"),
])
def test_absurd_or_malformed_uploads_are_refused_before_decoding(data, msg, monkeypatch):
    from PIL import Image, ImageFile

    for cls in (Image.Image, ImageFile.ImageFile):  # decoding a huge image's pixels fails the test
        real = cls.load
        monkeypatch.setattr(cls, "load", lambda self, _real=real: pytest.fail("pixels decoded")
                            if max(self.size) > pp.MAX_SIDE else _real(self))
    with pytest.raises(DataError, match=msg):
        pp.decode_image(data)


@pytest.mark.parametrize("text, msg", [
    ("/etc/passwd", "malformed"),
    ("file:///etc/passwd", "malformed"),
    ("data:text/plain;base64,aGVsbG8=", "malformed"),
    ("data:image/png;base64,***", "does not decode"),
    ("data:image/png;base64," + "A" * (pp.MAX_BYTES * 2), "too large"),
    ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "not a readable image"),
])
def test_malformed_data_urls_get_clear_messages(text, msg):
    with pytest.raises(DataError, match=msg):
        pp.preprocess(text)


@pytest.mark.parametrize("label", ["7", 7, " 0 ", 9])
def test_labels_0_to_9_are_accepted(label):
    assert check_label(label) == int(str(label).strip())


@pytest.mark.parametrize("label", ["10", -1, "a", "3.0", 3.5, None, "", "1e0"])
def test_labels_outside_0_to_9_are_refused(label):
    with pytest.raises(DataError, match="one of 0-9"):
        check_label(label)


# --- storage ---------------------------------------------------------------------------------------------
def _preds(tag: str = "") -> list[ModelPrediction]:
    return [ModelPrediction("msp", 0, 0, 0, f"msp-key{tag}", 3, 0.9),
            ModelPrediction("mcdropout", 0, 0, 0, f"mc-key{tag}", 5, 0.4)]


def test_a_flag_stores_image_label_predictions_and_time(tmp_path):
    store = DadcStore(tmp_path)
    png = pp.to_png(pp.preprocess(data_url(stroke())))
    ex_id = store.add_example(png, 5, _preds(), canvas_png=b"raw")
    (ex,) = store.examples()
    assert (ex.id, ex.label, ex.image_png) == (ex_id, 5, png) and ex.created_utc.endswith("Z")
    assert {(p.method, p.model_key, p.predicted) for p in store.predictions(ex_id)} == {
        ("msp", "msp-key", 3), ("mcdropout", "mc-key", 5)}
    assert store.fooled() == [{"method": "mcdropout", "round": 0, "model_key": "mc-key", "flagged": 1, "fooled": 0},
                              {"method": "msp", "round": 0, "model_key": "msp-key", "flagged": 1, "fooled": 1}]
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert con.execute("SELECT canvas_png FROM examples").fetchone()[0] == b"raw"


def test_a_failed_flag_leaves_nothing_behind(tmp_path):
    store = DadcStore(tmp_path)
    store.add_example(b"png", 1, _preds())
    dup = [*_preds(), _preds()[0]]  # the same method twice violates the primary key after the example is inserted
    with pytest.raises(sqlite3.IntegrityError):
        store.add_example(b"png2", 2, dup)
    assert [e.label for e in store.examples()] == [1]
    assert len(sqlite3.connect(store.path).execute("SELECT * FROM predictions").fetchall()) == 2


def _write_many(run_dir: str, tag: str, n: int) -> None:
    store = DadcStore(run_dir)
    for i in range(n):
        store.add_example(f"{tag}-{i}".encode(), i % 10, _preds(tag))


_WRITER = """
import sys
from bench.dadc.store import DadcStore, ModelPrediction

store, tag = DadcStore(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    store.add_example(f"{tag}-{i}".encode(), i % 10, [ModelPrediction("msp", 0, 0, 0, "msp-key" + tag, 3, 0.9),
                                                      ModelPrediction("mcdropout", 0, 0, 0, "mc-key" + tag, 5, 0.4)])
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), f"p{k}", "20"]) for k in range(2)]
    threads = [threading.Thread(target=_write_many, args=(str(tmp_path), f"t{k}", 25)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = DadcStore(tmp_path)
    examples = store.examples()
    assert len(examples) == 4 * 25 + 2 * 20 and len({e.id for e in examples}) == len(examples)
    assert {e.image_png for e in examples} == {f"t{k}-{i}".encode() for k in range(4) for i in range(25)} | {
        f"p{k}-{i}".encode() for k in range(2) for i in range(20)}
    assert sum(f["flagged"] for f in store.fooled()) == 2 * len(examples)


def test_missing_database_and_other_schema_versions_are_clear_errors(tmp_path):
    with pytest.raises(UsageError, match="no examples were collected"):
        DadcStore(tmp_path).examples()
    DadcStore(tmp_path).add_example(b"x", 1, [])
    with sqlite3.connect(tmp_path / "dadc.sqlite") as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(DataError, match="schema version 99"):
        DadcStore(tmp_path).examples()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dadc.sqlite").write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(DataError, match="not a readable dadc database"):
        DadcStore(tmp_path / "other").examples()


# --- the dadc:RUN eval set ----------------------------------------------------------------------------------
def test_dadc_eval_set_holds_the_collected_examples(tmp_path):
    store = DadcStore(tmp_path)
    imgs = [pp.to_mnist(np.pad(stroke(60, 8), 10).astype(np.float32) / 255), pp.to_mnist(
        np.rot90(np.pad(stroke(60, 8), 10)).astype(np.float32) / 255)]
    for img, label in zip(imgs, (1, 7)):
        store.add_example(pp.to_png(img), label, _preds())
    name = f"dadc:{tmp_path}"
    assert evalsets.expand([name]) == [name]
    data = evalsets.build(name, EvalContext())
    assert data.kind == "id" and data.shift == "dadc" and data.labels.tolist() == [1, 7]
    assert data.images.shape == (2, 1, 28, 28) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[1, 0].numpy(), np.round(imgs[1] * 255).astype(np.uint8))
    assert data.extra == {"examples": 2.0}
    assert len(evalsets.build(name, EvalContext(max_eval=1)).images) == 1


def test_dadc_eval_set_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evalsets.build(f"dadc:{tmp_path}", EvalContext())
    with sqlite3.connect(tmp_path / "x") as _:
        pass
    DadcStore(tmp_path).add_example(b"x", 1, [])
    with sqlite3.connect(tmp_path / "dadc.sqlite") as con:
        con.execute("DELETE FROM examples")
    with pytest.raises(DataError, match="no examples yet"):
        evalsets.build(f"dadc:{tmp_path}", EvalContext())
    with pytest.raises(UsageError, match="needs a run"):
        evalsets.build(evalsets.expand(["dadc"])[0], EvalContext())


# --- the page's logic and rounds, on a real tiny run -------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("dadc"), tmp_path_factory.getbasetemp() / "dadc-cache")


def _keys(run: Path) -> dict[str, str]:
    return {e["method"]: e["key"] for e in json.loads((run / "checkpoints.json").read_text()).values()}


def test_page_logic_predicts_with_every_method_and_flags_with_model_identity(run):
    from bench.dadc.app import Oracle, pred_rows
    from bench.dadc.rounds import served_methods

    oracle = Oracle(run, served_methods(run))
    img, _, preds = oracle.classify(data_url(stroke()))
    assert [p.method for p in preds] == ["mcdropout", "msp"]
    assert {p.method: p.model_key for p in preds} == _keys(run) and all(p.round == 0 for p in preds)
    assert all(0 <= p.predicted <= 9 and 0 < p.confidence <= 1 for p in preds)
    with pytest.raises(DataError, match="choose the true digit"):
        oracle.flag(data_url(stroke()), None)
    with pytest.raises(DataError, match="one of 0-9"):
        oracle.flag(data_url(stroke()), "12")
    with pytest.raises(DataError, match="blank"):
        oracle.flag(data_url(np.zeros((100, 100), np.uint8)), "1")
    assert not oracle.store.exists()  # nothing was stored by refused flags
    ex_id, img2, preds2 = oracle.flag(data_url(stroke()), "1")
    assert np.array_equal(img2, img) and preds2 == preds  # deterministic, even mcdropout (seeded)
    (ex,) = oracle.store.examples()
    assert ex.id == ex_id and ex.label == 1 and np.array_equal(pp.from_png(ex.image_png), np.round(img * 255))
    assert oracle.store.predictions(ex_id) == sorted(preds, key=lambda p: p.method)
    assert [r[:4] for r in oracle.stats()] == [[p.method, 0, 1, int(p.predicted != 1)] for p in preds]
    assert pred_rows(preds)[0][0] == "mcdropout"


def test_retrain_makes_a_round_that_is_served_and_compared(run, capsys):
    from bench.dadc.rounds import load_round, round_table, served_methods

    store = DadcStore(run)
    store.add_example(pp.to_png(pp.preprocess(png_bytes(255 - stroke()))), 7, [])  # a "1" the person calls 7
    n_examples = len(store.examples())
    assert main(["dadc", "retrain", "--run", str(run), "--method", "msp", "--human-fraction", "0.1"]) == 0
    (row,) = store.rounds("msp")
    assert row["round"] == 1 and row["parent_key"] == _keys(run)["msp"] and row["examples_used"] == n_examples
    assert row["human_copies"] == int(np.ceil(0.1 / 0.9 * row["mnist_train"] / n_examples))
    assert (run / row["checkpoint"]).exists() and row["lr"] == pytest.approx(0.002 * 0.1)
    served = {s.method: s for s in served_methods(run)}
    assert served["msp"].round == 1 and served["msp"].model_key == row["model_key"]
    assert served["mcdropout"].round == 0
    assert load_round(run, "msp", 0).model_key == _keys(run)["msp"]
    w0 = next(load_round(run, "msp", 0).model.model.parameters())
    w1 = next(served["msp"].model.model.parameters())
    assert not torch.equal(w0, w1)
    rows = round_table(run, "msp", max_eval=100)
    assert [(r["round"], r["trained_on"], r["unseen_n"]) for r in rows] == [(0, 0, n_examples), (1, n_examples, 0)]
    assert all(0 <= r["mnist_accuracy"] <= 100 for r in rows)
    capsys.readouterr()
    assert main(["dadc", "rounds", "--run", str(run), "--max-eval", "100"]) == 0
    out = capsys.readouterr().out
    assert "mcdropout" in out and row["model_key"][:12] in out
    assert main(["dadc", "retrain", "--run", str(run), "--method", "msp"]) == 0
    assert [r["round"] for r in store.rounds("msp")] == [1, 2]
    assert load_round(run, "msp", 1).model_key == row["model_key"]


def test_methods_that_cannot_be_fine_tuned_generically_are_refused():
    from bench.dadc.rounds import finetune_refusal
    from bench.methods import METHODS

    for name in ("msp", "mcdropout", "energy", "maxlogit", "entropy"):
        assert finetune_refusal(METHODS.get(name)()) is None
    for name in ("temperature", "trustgan", "confidnet", "ensemble", "trustscore"):
        assert finetune_refusal(METHODS.get(name)()) is not None


@pytest.mark.parametrize("args, msg", [
    (["dadc", "retrain", "--run", "{run}", "--method", "energy"], "has no fitted energy"),
    (["dadc", "retrain", "--run", "{no_examples}", "--method", "msp"], "no examples were collected"),
    (["dadc", "retrain", "--run", "{no_examples}", "--method", "energy"], "has no fitted energy"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--epochs", "0"], "--epochs must be >= 1"),
    (["dadc", "rounds", "--run", "{empty}"], "checkpoints.json is missing"),
    (["serve", "--run", "{run}", "--round", "x"], "--round 'x' is not latest"),
    (["serve", "--run", "{run}", "--port", "0"], "--port 0 is not a port"),
])
def test_dadc_commands_give_one_line_errors(args, msg, run, tmp_path, capsys):
    no_examples = tmp_path / "no-examples"  # the run's fitted methods, no example database
    no_examples.mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("checkpoints.json", "manifest.json"):
        shutil.copy(run / name, no_examples / name)
    args = [a.format(run=run, empty=tmp_path / "empty", no_examples=no_examples) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_serve_without_gradio_says_how_to_install_it(run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == "error: bench serve needs gradio: pip install -e '.[dadc]'\n"


def test_bench_run_scores_methods_on_the_dadc_set(run, tmp_path):
    import csv

    from _dadc import RUN_ARGS

    DadcStore(run).add_example(pp.to_png(pp.preprocess(png_bytes(stroke()))), 1, [])
    n = len(DadcStore(run).examples())
    out = tmp_path / "scored"
    args = [a if a != "mnist" else f"mnist,dadc:{run}" for a in RUN_ARGS]
    assert main([*args, "--out", str(out), "--cache-dir", str(run.parent.parent / "dadc-cache")]) == 0
    with open(out / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["eval_set"] == f"dadc:{run}"]
    assert {r["method"] for r in rows} == {"msp", "mcdropout"} and {r["shift"] for r in rows} == {"dadc"}
    assert {float(r["value"]) for r in rows if r["metric"] == "examples"} == {float(n)}
    assert all(0 <= float(r["value"]) <= 100 for r in rows if r["metric"] == "accuracy")
