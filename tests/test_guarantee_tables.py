"""The "failure", "guarantees" and "coverage" report views (bench/report/groups.py VIEWS): built only when --groups
names them, their columns and cells checked by hand on a synthetic run, cut per eval set (per metric for coverage) in
Markdown, read back from the report CSV, and every LaTeX table compiled in a one- and a two-column article without an
overfull box."""

from __future__ import annotations

import os

import numpy as np
import pytest

from _tiny import run_main
from bench.conformal import metric_names
from bench.report.export import render, to_csv
from bench.report.from_csv import read_report_csv
from bench.report.runs import load_runs
from bench.report.tables import build_tables
from bench.report.texcheck import TOLERANCE_PT, compile_tables, pdflatex
from bench.run.store import RunStore, cell_key

SEEDS = (0, 1, 2)
LABELLED = {"mnist": ("none", ""), "mnistc:fog": ("mnistc", ""),
            "occlusion:random-squares=0.3": ("occlusion", "0.3"), "occlusion:random-squares=0.5": ("occlusion", "0.5")}
FAILURE = ("auroc", "augrc", "aurc", "risk_cov90", "fpr95")


def value(method: str, ds: str, metric: str, seed: int) -> float:
    """A distinct, hand-readable value per cell: the mean over seeds 0, 1, 2 is value(..., 1)."""
    return 10.0 * list(LABELLED).index(ds) + (metric_names() + [*FAILURE, "accuracy"]).index(metric) + seed \
        + (0.5 if method == "b" else 0.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("views") / "run")
    store.ensure_writable()
    store.write_manifest({"run_id": "run", "device_name": "cpu (test)", "git_sha": "test", "command": ["bench"],
                          "versions": {}, "eval_set_groups": {},
                          "config": {"profile": "quick", "methods": ["a", "b"], "seeds": list(SEEDS), "folds": 1}})
    for m in ("a", "b"):
        for s in SEEDS:
            base = {"run_id": "run", "method": m, "backbone": "lenet", "seed": s, "fold": 0}
            for ds, (shift, sev) in LABELLED.items():
                rows = [{**base, "eval_set": ds, "shift": shift, "severity": sev, "metric": k,
                         "value": value(m, ds, k, s)} for k in [*FAILURE, *metric_names(), "accuracy"]]
                store.write_cell(cell_key(m, s, 0, ds), rows)
            store.write_cell(cell_key(m, s, 0, "ood:uniform"), [{**base, "eval_set": "ood:uniform", "shift": "ood",
                                                                  "severity": "", "metric": "ood_auroc",
                                                                  "value": 90.0}])
            store.write_cell(cell_key(m, s, 0, "cost"), [{**base, "eval_set": "cost", "shift": "cost",
                                                           "severity": "", "metric": "params", "value": 1.0}])
    store.write_results_csv()
    return store.dir


def test_views_only_when_named(run_dir):
    runs = load_runs([run_dir])
    assert not {"failure", "guarantees"} & {t.key for t in build_tables(runs)}
    assert [t.key for t in build_tables(runs, groups=["id", "guarantees", "failure"])] == ["id", "failure",
                                                                                          "guarantees"]


def test_failure_view_is_the_in_distribution_set_by_hand(run_dir):
    (t,) = build_tables(load_runs([run_dir]), groups=["failure"])
    assert [(c.eval_set, c.metric) for c in t.columns] == [("mnist", m) for m in FAILURE]
    j = [c.metric for c in t.columns].index("augrc")
    cell = t.cells[("b", j)]
    assert cell.mean == pytest.approx(value("b", "mnist", "augrc", 1)) and cell.std == pytest.approx(1.0)
    assert t.title.startswith("Failure prediction")


def test_guarantees_view_takes_every_labelled_set(run_dir):
    (t,) = build_tables(load_runs([run_dir]), groups=["guarantees"])
    shown = [m for m in metric_names() if m != "sgr_bound"]  # the bound is the calibration's: on request only
    assert [(c.eval_set, c.metric) for c in t.columns] == [(ds, m) for ds in sorted(LABELLED) for m in shown]
    j = next(i for i, c in enumerate(t.columns) if (c.eval_set, c.metric) == ("mnistc:fog", "cp_raps_size95"))
    assert t.cells[("a", j)].mean == pytest.approx(value("a", "mnistc:fog", "cp_raps_size95", 1))
    assert t.columns[j].label == "RAPS size95" and t.columns[j].unit == "" and t.columns[j].better == 0
    (t,) = build_tables(load_runs([run_dir]), groups=["guarantees"], metrics=["sgr_*"])
    assert {c.metric for c in t.columns} == {"sgr_risk", "sgr_coverage", "sgr_bound"}
    assert "calibrated on the validation split" in t.caption()


def test_markdown_cuts_the_guarantees_view_per_eval_set(run_dir):
    tables = build_tables(load_runs([run_dir]), groups=["failure", "guarantees"])
    md = render(tables, "md")
    assert md.count("Guarantees") == len(LABELLED) and md.count("Failure prediction") == 1
    assert "RAPS cov95" in md and "SGR risk" in md


def test_coverage_view_is_each_familys_mean_by_hand(run_dir):
    (t,) = build_tables(load_runs([run_dir]), groups=["coverage"])
    wanted = ("cp_lac_cov90", "cp_aps_cov90", "cp_raps_cov90", "sgr_risk")
    # in-distribution first (the groups' report order), then the shifted families by name
    assert [(c.eval_set, c.metric) for c in t.columns] == [(f, m) for f in ("mnist", "occlusion", "mnistc")
                                                           for m in wanted]
    j = [(c.eval_set, c.metric) for c in t.columns].index(("occlusion", "cp_aps_cov90"))
    cell = t.cells[("b", j)]
    by_hand = [(value("b", "occlusion:random-squares=0.3", "cp_aps_cov90", s)
                + value("b", "occlusion:random-squares=0.5", "cp_aps_cov90", s)) / 2 for s in SEEDS]
    assert cell.mean == pytest.approx(np.mean(by_hand)) and cell.std == pytest.approx(np.std(by_hand, ddof=1))
    assert cell.n == len(SEEDS) and "each column is a family" in t.caption()


def test_coverage_view_drops_a_unit_that_misses_a_set_of_the_family(run_dir, tmp_path):
    store = RunStore(run_dir)
    part = RunStore(tmp_path / "part")
    part.ensure_writable()
    part.write_manifest(store.read_manifest())
    part.write_cell("all", [r for r in store.rows() if not (r["seed"] == 2 and r["method"] == "a"
                                                            and r["eval_set"] == "occlusion:random-squares=0.5")])
    part.write_results_csv()
    (t,) = build_tables(load_runs([part.dir], allow_partial=True), groups=["coverage"])
    j = [(c.eval_set, c.metric) for c in t.columns].index(("occlusion", "cp_lac_cov90"))
    assert t.cells[("a", j)].n == 2 and t.cells[("b", j)].n == 3
    j = [(c.eval_set, c.metric) for c in t.columns].index(("mnist", "cp_lac_cov90"))
    assert t.cells[("a", j)].n == 3


def test_markdown_cuts_the_coverage_view_per_metric_and_the_csv_reads_back(run_dir, tmp_path):
    tables = build_tables(load_runs([run_dir]), groups=["coverage"])
    md = render(tables, "md")
    assert md.count("Guarantees under shift") == 4
    assert "| method | mnist | occlusion | mnistc |" in md
    (tmp_path / "r.csv").write_text(to_csv(tables))
    (back,) = read_report_csv(tmp_path / "r.csv", groups=["coverage"])
    assert [(c.eval_set, c.metric) for c in back.columns] == [(c.eval_set, c.metric) for c in tables[0].columns]


def test_sets_keeps_only_the_named_sets_in_runs_csvs_and_the_cli(run_dir, tmp_path):
    (t,) = build_tables(load_runs([run_dir]), groups=["guarantees"], sets=["mnist"])
    assert {c.eval_set for c in t.columns} == {"mnist"}
    (t,) = build_tables(load_runs([run_dir]), groups=["occlusion"], sets=["occlusion:*=0.5"])
    assert [c.eval_set for c in t.columns] == ["occlusion:random-squares=0.5"] * len(t.columns)
    (tmp_path / "r.csv").write_text(to_csv(build_tables(load_runs([run_dir]), groups=["id", "occlusion"])))
    (back,) = read_report_csv(tmp_path / "r.csv", sets=["occlusion:*=0.3"])
    assert back.key == "occlusion" and {c.eval_set for c in back.columns} == {"occlusion:random-squares=0.3"}
    code, out, err = run_main(["report", str(run_dir), "--groups", "guarantees", "--sets", "mnist", "--out",
                               str(tmp_path / "g.md")])
    assert code == 0, err
    assert (tmp_path / "g.md").read_text().count("Guarantees") == 1
    code, _, err = run_main(["report", str(run_dir), "--sets", "mnits"])
    assert code == 2 and "unknown eval set 'mnits'" in err and "mnist" in err and len(err.strip().splitlines()) == 1


def test_plots_take_the_views_names(run_dir, tmp_path):
    """--groups failure,guarantees,coverage with --plots: the views have no plots of their own (failure selects the
    risk-coverage curve), and naming them is no error (it was 'unknown group' after the tables were written)."""
    pytest.importorskip("matplotlib")
    from bench.report.figures import write_plots

    assert write_plots(load_runs([run_dir]), tmp_path / "plots", groups=["guarantees", "coverage"]) == []


def test_csv_round_trip(run_dir, tmp_path):
    tables = build_tables(load_runs([run_dir]), groups=["failure", "guarantees"])
    (tmp_path / "r.csv").write_text(to_csv(tables))
    back = read_report_csv(tmp_path / "r.csv", groups=["guarantees"])
    assert [t.key for t in back] == ["guarantees"]
    assert [(c.eval_set, c.metric) for c in back[0].columns] == [(c.eval_set, c.metric) for c in tables[1].columns]
    for key, cell in tables[1].cells.items():
        assert back[0].cells[key].mean == pytest.approx(cell.mean)


def test_cli_and_a_run_without_guarantee_rows(run_dir, tmp_path):
    code, out, err = run_main(["report", str(run_dir), "--groups", "failure,guarantees", "--out",
                               str(tmp_path / "t.tex"), "--out", str(tmp_path / "t.csv")])
    assert code == 0, err
    assert "Guarantees" in (tmp_path / "t.tex").read_text() and "guarantees," in (tmp_path / "t.csv").read_text()
    store = RunStore(run_dir)
    rows = [r for r in store.rows() if not r["metric"].startswith(("cp_", "sgr_"))]
    bare = RunStore(tmp_path / "bare")
    bare.ensure_writable()
    bare.write_manifest(store.read_manifest())
    bare.write_cell("all", rows)
    bare.write_results_csv()
    code, _, err = run_main(["report", str(bare.dir), "--groups", "guarantees"])
    assert code == 2 and "unknown group 'guarantees'" in err and len(err.strip().splitlines()) == 1


needs_latex = pytest.mark.skipif(pdflatex() is None and not os.environ.get("BENCH_REQUIRE_LATEX"),
                                 reason="pdflatex is not installed; CI sets BENCH_REQUIRE_LATEX")


@needs_latex
@pytest.mark.parametrize("template", ["onecolumn", "twocolumn"])
def test_latex_views_compile_and_fit(run_dir, template, tmp_path):
    tables = build_tables(load_runs([run_dir]), groups=["failure", "guarantees", "coverage"], ci=True)
    docs = [render(tables, "latex", layout=lay) for lay in ("auto", "sets", "group")]
    res, _ = compile_tables(docs, template, tmp_path)
    assert not res.errors and not res.too_wide, (res.errors[:3], res.too_wide)
    assert all(w <= TOLERANCE_PT for w in res.overfull_pt) and res.pages >= len(docs)
    assert np.isfinite([c.mean for t in tables for c in t.cells.values()]).all()
