"""``bench transfer``: the matrix agrees with direct white-box attacks; the command prints and saves it."""

from __future__ import annotations

import csv

import pytest
import torch
import torchattacks

from bench.commands.transfer import matrix_table, parse_eps, transfer_matrix
from bench.errors import UsageError
from bench.methods.core.base import FitContext

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)



@pytest.fixture(scope="module")
def two_models(tiny, tiny_ctx):
    train, val, _ = tiny
    ctx = FitContext(device=torch.device("cpu"), recipe=tiny_ctx.recipe)
    return {f"lenet/seed{s}": ctx.train_baseline("lenet", 10, s, train, val)[0].eval() for s in (0, 1)}


def test_matrix_diagonal_is_white_box_and_rows_are_complete(two_models, mnist_test):
    x, y = mnist_test.images[:100], mnist_test.labels[:100]
    rows = transfer_matrix(two_models, x, y, "fgsm", [0.2], torch.device("cpu"))
    assert len(rows) == 2 + 2 * 2  # clean row + 2 sources x 2 targets
    idx = {(r["source"], r["target"]): r["accuracy"] for r in rows}
    xf = x.float() / 255
    for name, model in two_models.items():
        adv = torchattacks.FGSM(model, eps=0.2)(xf, y)
        with torch.no_grad():
            assert idx[(name, name)] == pytest.approx(100 * float((model(adv).argmax(1) == y).float().mean()))
            assert idx[("clean", name)] == pytest.approx(100 * float((model(xf).argmax(1) == y).float().mean()))
        assert idx[(name, name)] < idx[("clean", name)]
    table = matrix_table(rows, 0.2, "fgsm")
    assert table.row_count == 3 and len(table.columns) == 3


def test_parse_eps():
    assert parse_eps("0.1, 0.3") == [0.1, 0.3]
    for bad in ("", "a", "0", "1.5"):
        with pytest.raises(UsageError):
            parse_eps(bad)


def test_command_prints_and_saves(tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "t"
    code = main(["transfer", "--backbones", "lenet", "--inits", "2", "--eps", "0.3", "--profile", "smoke",
                 "--set", "split.max_train=300", "--set", "eval.max_eval=100", "--device", "cpu", "--no-progress",
                 "--cache-dir", str(tmp_path / "c"), "--out", str(out)])
    assert code == 0
    assert "fgsm eps=0.3" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "results.csv")))
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert len(acc) == 2 + 4
    assert {r["eval_set"] for r in acc} == {"transfer:clean", "transfer:lenet/seed0", "transfer:lenet/seed1"}
    assert {r["severity"] for r in acc if r["eval_set"] != "transfer:clean"} == {"0.3"}
    assert sum(r["metric"] == "gen_seconds" for r in rows) == 2
    assert main(["transfer", "--backbones", "lenet", "--inits", "0"]) == 2
