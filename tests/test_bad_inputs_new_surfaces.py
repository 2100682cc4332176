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


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan"])
def test_score_with_a_bad_array_limit_says_so(tmp_path, monkeypatch, value):
    np.savez(tmp_path / "out.npz", logits=np.zeros((2, 3), np.float32), labels=np.zeros(2, int))
    monkeypatch.setenv("BENCH_MAX_ARRAY_GB", value)
    _one_line(*run_main(["score", str(tmp_path / "out.npz")])[::2], 2,
              f"BENCH_MAX_ARRAY_GB={value!r} must be a positive number of GiB")


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


# --- issue 35 item 1: the rest of the catalogue ----------------------------------------------------------------------
def _float_options() -> list[tuple[str, str, object]]:
    """(section, field, Range) of every float option declared with a range: every registered method's and train.*."""
    import dataclasses
    import typing

    import bench.methods  # noqa: F401  (the table of contents registers every method)
    from bench.methods.core.registry import METHODS
    from bench.methods.core.training import TrainRecipe

    out = []
    for section, cls in [("train", TrainRecipe), *((n, METHODS.get(n).Config) for n in METHODS.names())]:
        hints = typing.get_type_hints(cls)
        out += [(section, f.name, f.metadata["range"]) for f in dataclasses.fields(cls)
                if hints[f.name] is float and "range" in f.metadata]
    return out


def test_every_float_option_refuses_nan_and_inf_unless_it_declares_them():
    import math

    from bench.methods.core.registry import METHODS
    from bench.methods.core.training import TrainRecipe

    options = _float_options()
    assert len(options) >= 40  # 46 on 2026-12-06: a list that emptied itself would make this test pass vacuously
    for section, name, rng in options:
        assert rng.problem(math.nan) is not None, f"{section}.{name} accepts nan"
        for inf in (math.inf, -math.inf):
            assert (rng.problem(inf) is None) == (inf in rng.also), f"{section}.{name} and {inf}"
    allowed = {f"{s}.{n}" for s, n, r in options if math.inf in r.also}
    assert allowed == {"pnorm.p"}  # the max-norm: the one option that says inf means something
    for n in METHODS.names():  # every default still passes
        METHODS.get(n).Config()
    TrainRecipe()
    odin = METHODS.get("odin").Config
    with pytest.raises(UsageError, match=r"^odin.temperature must be > 0 and finite, got inf$"):
        odin(temperature=math.inf)
    with pytest.raises(UsageError, match=r"^odin.eps must be in \[0, 1\], got 1000000.0$"):
        odin(eps=1e6)
    assert odin(eps=1.0).eps == 1.0 and METHODS.get("pnorm").Config(p=math.inf).p == math.inf


def test_gallery_targeted_eps_nan_from_python(tmp_path):
    from bench.gallery import GalleryConfig, make_gallery

    for eps in (float("nan"), float("inf"), 1.5, -0.1):
        with pytest.raises(UsageError, match=r"--targeted-eps .* must be in \[0, 1\]"):
            make_gallery(tmp_path, tmp_path / "g", GalleryConfig(targeted_eps=eps))


def _tiny_model():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": "12"}, r"^seed='12' must be an int or a list of ints"),
    ({"seed": [0, 1.5]}, r"^seed=\[0, 1.5\] must be an int"),
    ({"seed": True}, r"^seed=True must be an int"),
    ({"names": 5}, r"^names=5 must be a name or a list of names"),
    ({"methods": None}, r"^methods=None must be a name or a list of names"),
    ({"methods": ["msp", 3]}, r"^methods=\['msp', 3\] must be a name"),
    ({"datasets": 5}, r"^datasets=5 must be a name or a list of names"),
    ({"options": [("eval.max_eval", 10)]}, r"^options=.* must be a dict"),
    ({"device": None}, r"^device=None must be a string"),
    ({"feature_layer": 3}, r"^feature_layer=3 must be the name of a submodule"),
])
def test_evaluate_argument_types_are_one_line(kwargs, message):
    import bench

    with pytest.raises(UsageError, match=message):
        bench.evaluate(_tiny_model(), **kwargs)


@pytest.mark.parametrize("ood, message", [
    ([np.zeros((3, 10))], "ood must be a dict of set name -> outputs"),
    ({1: np.zeros((3, 10))}, "ood must be a dict of set name -> outputs"),
    ("noise", "ood must be a dict"),
])
def test_score_ood_of_wrong_types(ood, message):
    import bench

    with pytest.raises(UsageError, match=message):
        bench.score(np.zeros((3, 10)), np.zeros(3, dtype=int), ood=ood)


def test_complex_outputs_are_refused(tmp_path):
    import torch
    from torch import nn

    import bench

    z = np.zeros((4, 10), np.complex64)
    with pytest.raises(UsageError, match="id logits holds complex numbers"):
        bench.score(z, np.zeros(4, dtype=int))
    with pytest.raises(UsageError, match="OOD set n logits holds complex numbers"):
        bench.score(np.zeros((4, 10)), np.zeros(4, dtype=int), ood={"n": torch.zeros(2, 10, dtype=torch.complex64)})
    path = tmp_path / "c.npz"
    np.savez(path, logits=z, labels=np.zeros(4, dtype=int))
    _one_line(*run_main(["score", str(path)])[::2], 2, "holds complex numbers (complex64)")

    class Complex(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10, dtype=torch.complex64)

    with pytest.raises(UsageError, match="returns torch.complex64 logits; it must return real numbers"):
        bench.evaluate(Complex(), methods=["msp"], datasets=["mnist"], device="cpu")


def test_meta_device_models_and_tensors_are_refused():
    import torch
    from torch import nn

    import bench

    meta = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, device="meta"))
    with pytest.raises(UsageError, match=r"model Sequential has tensors on the meta device \(1.weight"):
        bench.evaluate(meta, methods=["msp"], datasets=["mnist"], device="cpu")
    assert meta[1].weight.is_meta  # left as it was
    with pytest.raises(UsageError, match="id logits is a tensor on the meta device"):
        bench.score(torch.empty(3, 10, device="meta"), np.zeros(3, dtype=int))


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(3)\n", "fails to import (it calls sys.exit(3))"),
    ("raise ValueError('half a plugin')\n", "fails to import (ValueError: half a plugin)"),
])
def test_a_plugin_that_exits_or_raises_is_one_line_naming_it(tmp_path, monkeypatch, body, message):
    from bench.plugins import load_plugins

    plugin = tmp_path / "myplugin.py"
    plugin.write_text(body)
    with pytest.raises(UsageError, match=f"^BENCH_PLUGINS: {plugin}"):
        load_plugins([str(plugin)])
    monkeypatch.setenv("BENCH_PLUGINS", str(plugin))
    code, _, err = run_main(["run", "--profile", "smoke", "--out", str(tmp_path / "r")])
    _one_line(code, err, 2, f"BENCH_PLUGINS: {plugin} {message}")


def test_data_with_an_empty_last_class_folder(tmp_path):
    """Classes a, b, c with c empty: before, labels 0..1 and a manifest of three class names for a 2-class model."""
    from PIL import Image

    from bench.datasets import user_data

    for c in "abc":
        (tmp_path / c).mkdir()
    for c in "ab":
        for i in range(3):
            Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(UsageError, match=f"^{tmp_path / 'c'} is a class folder without image files"):
        user_data.load(f"d={tmp_path}")
    (tmp_path / "c" / "0.png").write_bytes((tmp_path / "a" / "0.png").read_bytes())
    spec = user_data.load(f"d={tmp_path}").spec
    assert spec.num_classes == 3 and spec.classes == ("a", "b", "c")


def test_image_side_limit_is_checked_from_the_header_and_configurable(tmp_path, monkeypatch):
    from PIL import Image

    from bench.datasets.image_files import MAX_IMAGE_SIDE, read_image, read_npz

    assert MAX_IMAGE_SIDE == 1024  # documented in docs/reliability.md and docs/your-data.md
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(3000, 2000))  # no pixel data: decoding it would fail
    with pytest.raises(UsageError, match=r"images of 3000x2000 pixels \(W x H\) are larger than bench reads \(1024"):
        read_image(big)
    monkeypatch.setenv("BENCH_MAX_IMAGE_SIDE", "16")
    small = tmp_path / "s.png"
    Image.fromarray(np.zeros((17, 8), np.uint8)).save(small)  # H 17 > 16
    with pytest.raises(UsageError, match=r"8x17 pixels \(W x H\) are larger than bench reads \(16 a side"):
        read_image(small)
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 3, 16, 17), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(UsageError, match=r"a.npz\[images\]: images of 17x16 pixels"):
        read_npz(tmp_path / "a.npz")
    monkeypatch.setenv("BENCH_MAX_IMAGE_SIDE", "17")
    assert read_image(small).shape == (17, 8) and read_npz(tmp_path / "a.npz")["images"].shape == (2, 3, 16, 17)
    monkeypatch.setenv("BENCH_MAX_IMAGE_SIDE", "big")
    with pytest.raises(UsageError, match="BENCH_MAX_IMAGE_SIDE='big' must be a whole number"):
        read_image(small)


def test_report_csv_problems_from_python(tmp_path):
    from bench.report.export import CSV_FIELDS
    from bench.report.from_csv import read_report_csv

    head = ",".join(CSV_FIELDS) + "\n"
    row = "id,mnist,accuracy,alpha,3,91.0,1.0,,,1,1,,1\n"
    cases = {"word": (head + row.replace(",3,", ",three,"), r"line 2: n='three' is not a number"),
             "frac": (head + row.replace(",3,", ",2.5,"), r"line 2: n='2.5' is not a number"),
             "short": (head + row + row[:20] + "\n", r"line 3 has 4 cells, not 13")}  # id,mnist,accuracy,al
    for name, (text, message) in cases.items():
        (tmp_path / f"{name}.csv").write_text(text)
        with pytest.raises(UsageError, match=message):
            read_report_csv(tmp_path / f"{name}.csv")
    (tmp_path / "ok.csv").write_text(head + row)
    (table,) = read_report_csv(tmp_path / "ok.csv")
    assert table.cells[("alpha", 0)].mean == 91.0 and table.cells[("alpha", 0)].n == 3


def test_texcheck_on_a_file_that_is_not_utf8(tmp_path, capsys):
    from bench.report.texcheck import main

    path = tmp_path / "t.tex"
    path.write_bytes("\\textbf{r\u00e9sultats}".encode("latin-1"))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path} is not UTF-8 text; give a table file written by bench report (UTF-8)\n"


def test_a_full_disk_names_the_folder(tmp_path, monkeypatch):
    """ENOSPC injected where every file is written (os.fsync in bench.utils' atomic write): one line naming the
    folder, exit 1 on the CLI, DiskFullError (a BenchError) in Python, and no temporary file left behind."""
    import errno
    import os

    from bench import utils
    from bench.errors import DiskFullError

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.os, "fsync", full)
    with pytest.raises(DiskFullError, match=f"^no space left on the device holding {tmp_path / 'sub'} "
                                            r"\(No space left on device\) while writing a.json; free space there"):
        utils.atomic_write_text(tmp_path / "sub" / "a.json", "{}")
    assert list((tmp_path / "sub").iterdir()) == []
    path = tmp_path / "o.npz"
    np.savez(path, logits=np.eye(10)[[0, 1, 2, 3]] * 5, labels=np.arange(4))
    code, _, err = run_main(["score", str(path), "--out", str(tmp_path / "scored")])
    _one_line(code, err, 1, f"no space left on the device holding {tmp_path / 'scored'} (No space left on device)")


def test_a_full_disk_while_saving_figures_names_the_folder(tmp_path, monkeypatch):
    """Report plots and gallery figures are rendered in memory and written by the atomic writer: ENOSPC is the same
    one-line DiskFullError (matplotlib's savefig on a path gave a bare OSError), and no partial file is left."""
    import errno
    import os

    from bench import utils
    from bench.errors import DiskFullError
    from bench.gallery.draw import pyplot, save_figure
    from bench.report.plots import _save

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.os, "fsync", full)
    plt = pyplot()
    for out, write in ((tmp_path / "plots", lambda fig, d: _save(fig, d, "auroc")),
                       (tmp_path / "gallery", lambda fig, d: save_figure(fig, d, "fgsm", "a caption"))):
        out.mkdir()
        fig = plt.figure(figsize=(2, 2))
        with pytest.raises(DiskFullError, match=f"^no space left on the device holding {out} "):
            write(fig, out)
        plt.close("all")
        assert list(out.iterdir()) == []


def test_score_prints_no_empty_cost_table(tmp_path):
    path = tmp_path / "o.npz"
    rng = np.random.default_rng(0)
    np.savez(path, logits=rng.normal(size=(20, 10)), labels=rng.integers(0, 10, 20))
    code, out, err = run_main(["score", str(path)])
    assert code == 0 and err == "", err
    assert "accuracy" in out and "cost" not in out, out


def test_a_torchscript_model_loads_without_warnings_from_bench(tmp_path):
    """torch.jit.script / save warn in the user's own code (documented in docs/byom.md); loading and probing the
    file in bench adds nothing, even with every warning shown."""
    import warnings

    import torch

    from bench.own.model import UserModel
    from bench.own.model_files import load_model

    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notices of the user's side
        torch.jit.save(torch.jit.script(_tiny_model()), str(path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_model(str(path))
        adapted = UserModel(loaded.module, loaded.name)
        adapted.probe(torch.rand(4, 1, 28, 28), 10)
        adapted.close()
    assert [str(w.message) for w in seen] == []
