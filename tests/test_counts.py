"""Every report table says how many images it rests on: each set's images and, for labelled sets, the errors per
seed (mean over seeds, fewest-most over the methods), in Markdown, LaTeX and the report CSV (bench/report/counts.py)."""

from __future__ import annotations

import json

import pytest
import torch

from _runs import write_run
from bench.methods.core.base import Prediction
from bench.report.export import render, to_csv
from bench.report.from_csv import read_report_csv
from bench.report.latex import to_latex
from bench.report.runs import load_runs
from bench.report.tables import build_tables
from bench.report.texcheck import TOLERANCE_PT, compile_tables, pdflatex
from bench.run import rows as rowlib

# per-seed errors (seeds 0, 1, 2) on the labelled sets, by hand; means: mnist alpha 12, beta 20, gamma 33
ERRORS = {"mnist": {"alpha": [10, 12, 14], "beta": [20, 20, 20], "gamma": [30, 33, 36]},
          "fgsm:eps=0.1": {"alpha": [25, 25, 25], "beta": [20, 21, 22], "gamma": [30, 30, 33]},
          "fgsm:eps=0.3": {"alpha": [36, 36, 36], "beta": [34, 34, 34], "gamma": [38, 39, 40]}}
IMAGES = {"mnist": 100, "fgsm:eps=0.1": 40, "fgsm:eps=0.3": 40, "ood:fashion": 80, "ood:uniform": 60}


def test_rows_count_images_and_errors():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    labels = torch.tensor([0, 1, 1, 0, 0])  # wrong: images 2 and 3 (a tie goes to class 0, as argmax does)
    out = rowlib.id_rows(Prediction(probs, probs.max(1).values), labels)
    assert (out["n_images"], out["n_errors"]) == (5.0, 2.0)
    assert out["accuracy"] == pytest.approx(100 * (1 - out["n_errors"] / out["n_images"]))
    ood = rowlib.ood_rows(Prediction(probs, probs.max(1).values), Prediction(probs[:3], probs[:3].max(1).values))
    assert ood["n_images"] == 3.0 and "n_errors" not in ood


@pytest.fixture()
def counted_run(tmp_path):
    """The hand-valued run of tests/_runs.py with count rows added to its cells."""
    run = write_run(tmp_path)
    for path in (run / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        base = {k: v for k, v in cell[0].items() if k not in ("metric", "value")}
        if base["eval_set"] in IMAGES:
            cell.append({**base, "metric": "n_images", "value": float(IMAGES[base["eval_set"]])})
        if base["eval_set"] in ERRORS:
            err = ERRORS[base["eval_set"]][base["method"]][base["seed"]]
            cell.append({**base, "metric": "n_errors", "value": float(err)})
        path.write_text(json.dumps(cell))
    return run


def test_each_table_states_its_counts(counted_run):
    tables = {t.key: t for t in build_tables(load_runs([counted_run]))}
    assert ("fewest–most over the methods): mnist 12–33 of 100." in tables["id"].caption())
    assert tables["id"].counts["mnist"].errors == {"alpha": 12.0, "beta": 20.0, "gamma": 33.0}
    # adversarial: fgsm 0.1 means alpha 25, beta 21, gamma 31; fgsm 0.3: 36, 34, 39
    assert "fgsm:eps=0.1 21–31 of 40; fgsm:eps=0.3 34–39 of 40." in tables["adversarial"].caption()
    assert tables["ood-near"].caption().endswith("; OOD images: fashion 80.")
    assert tables["ood-far"].caption().endswith("; OOD images: uniform 60.")
    md = render(list(tables.values()), "md")
    assert "mnist 12–33 of 100" in md and "OOD images: fashion 80" in md
    tex = to_latex(list(tables.values()))
    assert "mnist 12--33 of 100." in tex and "OOD images: fashion 80." in tex
    # the counts are never columns, even when every metric is asked for
    everything = build_tables(load_runs([counted_run]), metrics=["*"])
    assert not {c.metric for t in everything for c in t.columns} & {"n_images", "n_errors"}


def test_many_sets_give_the_range(counted_run):
    from bench.report.counts import SetCount, counts_text

    counts = {f"mnistc:{i}": SetCount(10_000, {"a": 100.0 * (i + 1), "b": 50.0}) for i in range(5)}
    assert counts_text(counts) == ("10,000 images per set (5 sets); misclassified images per seed (mean over seeds):"
                                   " 50–500 over the sets and methods")
    assert counts_text({}) == ""


def test_counts_survive_the_report_csv(counted_run, tmp_path):
    tables = build_tables(load_runs([counted_run]))
    path = tmp_path / "report.csv"
    path.write_text(to_csv(tables))
    back = read_report_csv(path)
    assert [t.counts for t in back] == [t.counts for t in tables]
    assert render(back, "md") == render(tables, "md") and to_latex(back) == to_latex(tables)
    assert [t.counts for t in read_report_csv(path, methods=["alpha"])][0]["mnist"].errors == {"alpha": 12.0}


@pytest.mark.skipif(pdflatex() is None, reason="pdflatex is not installed")
def test_tables_with_counts_compile_and_fit(counted_run, tmp_path):
    tables = build_tables(load_runs([counted_run]))
    for template in ("onecolumn", "twocolumn"):
        res, _ = compile_tables([to_latex(tables)], template, tmp_path / template)
        assert not res.errors and all(w <= TOLERANCE_PT for w in res.overfull_pt), (template, res.errors)


def test_dagger_count_of_the_committed_leaderboard(capsys):
    """tools/dagger_count.py on results/leaderboard.csv: the † cells of its Markdown tables, counted by hand (id
    AUROC: sngp beside edl (best); AURC: none; near OOD AUROC: 18 on Fashion-MNIST, TrustGAN alone on notMNIST (ddu
    best), ddu, dice and oodgan on the mean; FPR95: 35 on Fashion-MNIST, none on notMNIST, six on the mean)."""
    from pathlib import Path

    from _tools import load_tool

    root = Path(__file__).resolve().parents[1]
    tool = load_tool("dagger_count")
    got = tool.count(root / "results" / "leaderboard.csv", ["id", "ood-near"], None)
    assert got == [("id", "mnist", "auroc", 1, 42), ("id", "mnist", "aurc", 0, 42),
                   ("ood-near", "ood:fashion", "ood_auroc", 18, 42), ("ood-near", "ood:fashion", "ood_fpr95", 35, 42),
                   ("ood-near", "ood:notmnist", "ood_auroc", 1, 42), ("ood-near", "ood:notmnist", "ood_fpr95", 0, 42),
                   ("ood-near", "mean", "ood_auroc", 3, 42), ("ood-near", "mean", "ood_fpr95", 6, 42)]
    # re-read from p_holm at the CSV's own alpha, the marks are the CSV's; a stricter alpha marks at least as many
    path = root / "results" / "leaderboard.csv"
    assert tool.count(path, ["*"], 0.05) == tool.count(path, ["*"], None)
    strict, default = tool.count(path, ["*"], 0.001), tool.count(path, ["*"], None)
    assert [a[:3] for a in strict] == [b[:3] for b in default] and all(a[3] >= b[3] for a, b in zip(strict, default))
    assert sum(a[3] for a in strict) > sum(b[3] for b in default)  # 5 seeds: some cells are significant only at 0.05
    assert tool.main([str(root / "results" / "leaderboard.csv")]) == 0
    assert "total ood-near: 63 of 252 cells" in capsys.readouterr().out


def test_terminal_summary_states_the_counts():
    from bench.report.summary import summary_tables

    rows = []
    for method, errors in {"a": (4, 6), "b": (8, 8)}.items():
        for seed, err in enumerate(errors):
            base = {"method": method, "seed": seed, "shift": "none"}
            rows += [{**base, "eval_set": "mnist", "metric": "accuracy", "value": 100 - err},
                     {**base, "eval_set": "mnist", "metric": "n_images", "value": 100.0},
                     {**base, "eval_set": "mnist", "metric": "n_errors", "value": float(err)},
                     {**base, "eval_set": "ood:fashion", "shift": "ood", "metric": "ood_auroc", "value": 90.0},
                     {**base, "eval_set": "ood:fashion", "shift": "ood", "metric": "n_images", "value": 50.0}]
    tables = summary_tables(rows)
    assert tables[0].caption.endswith("fewest–most over the methods): mnist 5–8 of 100")
    assert tables[1].caption == "OOD images: ood:fashion 50"
    assert len(tables) == 2  # no cost rows: no cost table (and a cost table counts nothing)
