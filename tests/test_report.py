"""Report: statistics by hand-computed cases, run loading and its bad inputs, table building, the writers and the
CLI (files written only when everything succeeded)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from _runs import write_run
from bench.cli import main
from bench.errors import UsageError
from bench.report import tables as report
from bench.report.export import render, to_csv, to_latex, to_markdown
from bench.report.runs import load_runs
from bench.report.stats import Verdict, bootstrap_ci, compare_to_best, holm, paired_t_test, summarize
from bench.report.tables import build_tables


# ------------------------------------------------------------------------------------------------ statistics
def test_summarize_mean_sample_std_and_drops_nan():
    assert summarize([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)  # var = ((1)^2 + 0 + 1^2) / (3 - 1) = 1
    mean, std, n = summarize([4.0, float("nan")])
    assert (mean, n) == (4.0, 1) and math.isnan(std)
    assert summarize([])[2] == 0


def test_bootstrap_exact_enumeration_hand_cases():
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    # [0, 10]: the 4 resamples have means 0, 5, 5, 10 -> CDF 1/4, 3/4, 1
    assert bootstrap_ci([0.0, 10.0], level=0.95) == (0.0, 10.0)
    assert bootstrap_ci([0.0, 10.0], level=0.5) == (0.0, 5.0)  # quantiles 0.25 -> 0, 0.75 -> 5
    # [0, 0, 10]: k tens among 3 draws ~ Bin(3, 1/3): P(mean <= 6.67) = 26/27 < 0.975 -> upper bound 10
    assert bootstrap_ci([0.0, 0.0, 10.0]) == (0.0, 10.0)
    assert all(math.isnan(x) for x in bootstrap_ci([3.0]))


def test_bootstrap_monte_carlo_is_seeded_and_inside_the_range():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # 7**7 > 50,000: sampled
    lo, hi = bootstrap_ci(values, seed=3)
    assert (lo, hi) == bootstrap_ci(values, seed=3)
    assert 1.0 <= lo < 4.0 < hi <= 7.0
    assert hi - lo < 6.0


def test_paired_t_test_hand_case_and_scipy():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 * sqrt(3); df = 2 has p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14)
    assert paired_t_test([1, 2, 3], [0, 0, 0]) == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
    assert paired_t_test([1, 2], [1, 2]) == 1.0
    assert paired_t_test([3, 4, 5], [1, 2, 3]) == 0.0  # constant difference: zero variance
    with pytest.raises(ValueError):
        paired_t_test([1.0], [2.0])


def test_holm_hand_cases():
    # sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06; back in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5*2 = 1.0 caps the larger one too
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


def test_compare_to_best_paired_and_holm():
    units = {"a": {0: 90.0, 1: 91.0, 2: 92.0}, "b": {0: 89.0, 1: 90.5, 2: 91.0}, "c": {0: 80.0, 1: 81.0, 2: 82.0}}
    # a - b = [1, 0.5, 1]: mean 5/6, sd 0.2887, t = 5 -> p = 1 - 5/sqrt(27) = 0.03775; a - c constant -> p 0
    # Holm over (0.03775, 0): sorted 0*2 = 0, 0.03775*1 -> unchanged
    v = compare_to_best(units, better=+1, alpha=0.05)
    assert v["a"] == Verdict(True, False, None)
    assert v["b"].p_holm == pytest.approx(1 - 5 / math.sqrt(27)) and not v["b"].tied
    assert v["c"].p_holm == 0.0 and not v["c"].tied
    assert compare_to_best(units, better=+1, alpha=0.01)["b"].tied  # 0.0377 >= 0.01
    low = compare_to_best(units, better=-1)
    assert low["c"].best and not low["a"].best
    assert not any(x.best or x.tied for x in compare_to_best(units, better=0).values())


def test_severity_value():
    assert report.severity_value("0.1") == 0.1
    assert report.severity_value("eps=0.3") == 0.3
    assert math.isnan(report.severity_value("horizontal"))


# ------------------------------------------------------------------------------------------------ loading runs
def test_load_runs_reads_rows_and_groups(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    assert set(runs.rows["method"]) == {"alpha", "beta", "gamma"}
    assert runs.ood_groups == {"ood:fashion": "near", "ood:uniform": "far"}
    assert runs.rows["value"].dtype == float


def test_an_old_run_gets_its_groups_from_the_registry_without_building_a_set(tmp_path, monkeypatch):
    from bench.datasets import evalsets
    from bench.run.store import RunStore

    run = write_run(tmp_path)
    m = RunStore(run).read_manifest()
    del m["eval_set_groups"]  # as written before the runner recorded groups
    RunStore(run).write_manifest(m)

    def refuse(*args, **kwargs):
        raise AssertionError("a report must not build an eval set")

    monkeypatch.setattr(evalsets, "build", refuse)
    runs = load_runs([run])
    assert runs.ood_groups == {"ood:fashion": "near", "ood:uniform": "far"}  # as their registry entries declare
    assert [t.key for t in build_tables(runs)] == ["id", "adversarial", "ood-near", "ood-far", "cost"]


def test_each_eval_set_declares_the_group_its_rows_say():
    """The declared report group agrees with what the set builds: OOD sets by their near/far group, the rest by the
    table their shift family belonged to before families declared it (report.py's shift lists)."""
    from bench.datasets import evalsets
    from bench.report.groups import GROUPS

    by_shift = {"none": "id", "pmnist": "occlusion", "occlusion": "occlusion", "fgsm": "adversarial",
                "pgd": "adversarial", "fgsm-transfer": "adversarial", "uap": "adversarial", "mnistc": "shift"}
    ctx = evalsets.EvalContext(max_eval=2, allow_download=False)
    for name in evalsets.EVAL_SETS.names():
        spec = evalsets.EVAL_SETS.get(name)
        if name in ("ood:kmnist", "ood:emnist-letters", "ood:cifar10-grey"):  # downloads: not built here
            assert spec.report_group in ("ood-near", "ood-far"), name
            continue
        if name.startswith("ood:") and name not in ("ood:fashion", "ood:mnist", "ood:uniform", "ood:gaussian"):
            continue  # read from the data folder (notMNIST, OpenOOD's folders): not built here
        assert spec.report_group in GROUPS or spec.report_group == name.split(":")[0], name
        if not spec.family and not spec.needs_model:
            from bench.datasets.source import EMBEDDED, embedded

            # an embedded test set is the in-distribution set of its own benchmark only
            d = evalsets.build(name, evalsets.EvalContext(max_eval=2, allow_download=False, data=embedded(name))
                               if name in EMBEDDED else ctx)
            expected = f"ood-{d.group}" if d.shift == "ood" else by_shift[d.shift]
            assert spec.report_group == expected, name
        elif name in by_shift:
            assert spec.report_group == by_shift[name], name


def test_combines_runs_with_other_seeds(tmp_path):
    a = write_run(tmp_path, "a", seeds=(0, 1))
    b = write_run(tmp_path, "b", seeds=(2,))
    runs = load_runs([a, b])
    acc = runs.rows[(runs.rows["metric"] == "accuracy") & (runs.rows["eval_set"] == "mnist")]
    assert sorted(acc[acc["method"] == "alpha"]["seed"]) == [0, 1, 2]


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("not-a-run", "not a run directory"),
    ("empty", "no finished cells"),
    ("partial", "is partial: 1 of"),
    ("incompatible", "incompatible: train differs"),
    ("duplicate", "appears in more than one run"),
])
def test_bad_runs_are_one_line_usage_errors(tmp_path, case, message):
    if case == "missing":
        paths = [tmp_path / "nope"]
    elif case == "not-a-run":
        (tmp_path / "x").mkdir()
        paths = [tmp_path / "x"]
    elif case == "empty":
        d = write_run(tmp_path, "e")
        for p in (d / "cells").glob("*.json"):
            p.unlink()
        paths = [d]
    elif case == "partial":
        paths = [write_run(tmp_path, skip=("beta__seed1__fold0__ood_fashion",))]
    elif case == "incompatible":
        paths = [write_run(tmp_path, "a", seeds=(0,)), write_run(tmp_path, "b", seeds=(1,), epochs=5)]
    else:
        paths = [write_run(tmp_path, "a", seeds=(0, 1)), write_run(tmp_path, "b", seeds=(1, 2))]
    with pytest.raises(UsageError, match=message) as e:
        load_runs(paths)
    assert "\n" not in str(e.value)


def test_allow_partial(tmp_path):
    runs = load_runs([write_run(tmp_path, skip=("beta__seed1__fold0__ood_fashion",))], allow_partial=True)
    assert len(runs.rows) > 0


# ------------------------------------------------------------------------------------------------ tables
def _table(tables, key):
    return next(t for t in tables if t.key == key)


def _cell(table, method, eval_set, metric):
    j = next(i for i, c in enumerate(table.columns) if c.eval_set == eval_set and c.metric == metric)
    return table.cells[(method, j)]


def test_tables_per_group_with_hand_checked_cells(tmp_path):
    tables = build_tables(load_runs([write_run(tmp_path)]), ci=True)
    assert [t.key for t in tables] == ["id", "adversarial", "ood-near", "ood-far", "cost"]
    id_t = _table(tables, "id")
    acc = _cell(id_t, "alpha", "mnist", "accuracy")
    assert (acc.mean, acc.std, acc.n, acc.best) == (91.0, 1.0, 3, True)
    assert (acc.ci_low, acc.ci_high) == (90.0, 92.0)  # exact bootstrap of 3 values spans min..max at 95%
    beta = _cell(id_t, "beta", "mnist", "accuracy")
    assert beta.mean == pytest.approx((89 + 90.5 + 91) / 3) and not beta.tied  # p = 0.0377 < 0.05 (see above)
    # AUROC: beta best (75); alpha - beta = [-5, -3, -1]
    assert _cell(id_t, "beta", "mnist", "auroc").best
    assert _cell(id_t, "alpha", "mnist", "auroc").tied  # Holm p >= 0.05 (value checked below)
    assert _cell(id_t, "beta", "mnist", "ece").best  # lower is better
    near = _table(tables, "ood-near")
    assert [c.eval_set for c in near.columns] == ["ood:fashion", "ood:fashion"]  # one set: no mean column
    far = _table(tables, "ood-far")
    assert _cell(far, "alpha", "ood:uniform", "ood_auroc").mean == 100.0  # 99 + (0 + 1 + 2) / 3
    adv = _table(tables, "adversarial")
    assert [c.eval_set for c in adv.columns][:2] == ["fgsm:eps=0.1", "fgsm:eps=0.1"]  # ordered by severity


def test_holm_p_in_table_matches_hand_value(tmp_path):
    tables = build_tables(load_runs([write_run(tmp_path)]))
    id_t = _table(tables, "id")
    # AUROC column: best beta; alpha - beta = [-5, -3, -1] (t = -2.598, p = 0.1216), gamma - beta = [-15, -14, -10]
    p_alpha = stats.ttest_rel([70, 72, 74], [75, 75, 75]).pvalue
    p_gamma = stats.ttest_rel([60, 61, 65], [75, 75, 75]).pvalue
    assert _cell(id_t, "alpha", "mnist", "auroc").p_holm == pytest.approx(holm([p_alpha, p_gamma])[0])
    assert _cell(id_t, "gamma", "mnist", "auroc").p_holm == pytest.approx(holm([p_alpha, p_gamma])[1])


def test_ood_mean_column_when_a_group_has_several_sets(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    runs.rows["group"] = "far"  # put both OOD sets in one group
    runs.rows.loc[runs.rows["shift"] != "ood", "group"] = ""
    far = _table(build_tables(runs), "ood-far")
    mean = _cell(far, "beta", "mean", "ood_auroc")
    assert mean.mean == pytest.approx((85 + 97) / 2 + 1)


def test_metric_and_method_selection(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    tables = build_tables(runs, metrics=["ood_*"], methods=["gamma", "alpha"])
    assert {t.key for t in tables} == {"ood-near", "ood-far"}
    assert tables[0].methods == ["gamma", "alpha"]
    with pytest.raises(UsageError, match="unknown metric 'acuracy'.*accuracy"):
        build_tables(runs, metrics=["acuracy"])
    with pytest.raises(UsageError, match="unknown method 'delta'"):
        build_tables(runs, methods=["delta"])


def test_group_selection(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    all_keys = [t.key for t in build_tables(runs)]
    assert "cost" in all_keys and "id" in all_keys
    kept = [t.key for t in build_tables(runs, groups=["id", "ood-*"])]
    assert kept == [k for k in all_keys if k == "id" or k.startswith("ood-")]  # report order kept, cost gone
    with pytest.raises(UsageError, match="unknown group 'costs'.*cost"):
        build_tables(runs, groups=["costs"])


# ------------------------------------------------------------------------------------------------ writers
def test_writers(tmp_path):
    tables = build_tables(load_runs([write_run(tmp_path)]))
    md = to_markdown(tables)
    assert "| alpha | **91.00 ± 1.00** |" in md and "†" in md
    tex = to_latex(tables)
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\bfseries 91.00 & \pm 1.00", r"\(^\dagger\)",
                  "paired $t$-test", "Holm", r"\cmidrule(lr)"):
        assert token in tex
    df = pd.read_csv(io.StringIO(to_csv(tables)))
    assert df["mean"].dtype == float and df["std"].dtype == float
    row = df[(df["method"] == "alpha") & (df["metric"] == "accuracy") & (df["eval_set"] == "mnist")].iloc[0]
    assert (row["mean"], row["std"], row["n"], row["best"]) == (91.0, 1.0, 3, 1)
    html = render(tables, "html", "preamble")
    assert "<b>91.00 ± 1.00</b>" in html and html.count("<table>") == len(tables)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_every_format_and_plots(tmp_path, capsys):
    run = write_run(tmp_path, predictions=True)
    outs = [tmp_path / f"board.{ext}" for ext in ("md", "tex", "csv", "html")]
    args = ["report", str(run), "--plots", str(tmp_path / "plots")]
    for o in outs:
        args += ["--out", str(o)]
    assert main(args) == 0
    assert all(o.stat().st_size > 0 for o in outs)
    written = {p.name for p in (tmp_path / "plots").iterdir()}
    for name in ("risk_coverage", "reliability", "confidence_ood_fashion", "severity_fgsm", "cost"):
        assert {f"{name}.png", f"{name}.pdf"} <= written


def test_cli_stdout_markdown(tmp_path, capsys):
    assert main(["report", str(write_run(tmp_path)), "--metrics", "accuracy"]) == 0
    out = capsys.readouterr().out
    assert "### In-distribution" in out and "Acc ↑" in out


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "acuracy"], "unknown metric"),
    (["--out", "{tmp}/board.txt"], "cannot tell the format"),
    (["--alpha", "2"], "--alpha"),
])
def test_cli_bad_input_one_line_nonzero_nothing_written(tmp_path, capsys, extra, message):
    run = write_run(tmp_path)
    board = tmp_path / "board.md"
    board.write_text("old")
    args = ["report", str(run), "--out", str(board)] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert board.read_text() == "old"


def test_plot_line_styles_tell_every_registered_method_apart():
    from bench.methods import METHODS
    from bench.report.plots import line_style

    n = len(METHODS.names())
    styles = [tuple(sorted(line_style(i).items())) for i in range(max(n, 40))]
    assert len(set(styles)) == len(styles)  # 40 distinct (colour, line, marker) triples, more than the registry
    assert line_style(0)["color"] != line_style(1)["color"] and line_style(0)["color"] == line_style(10)["color"]


def test_plots_follow_the_selected_groups(tmp_path, capsys):
    run = write_run(tmp_path, predictions=True)
    assert main(["report", str(run), "--groups", "id,ood-*", "--plots", str(tmp_path / "plots")]) == 0
    written = {p.stem for p in (tmp_path / "plots").iterdir()}
    assert {"risk_coverage", "reliability", "confidence_ood_fashion"} <= written
    assert not any(n.startswith(("cost", "severity")) for n in written)  # their groups were left out


def test_a_wildcard_run_expects_the_methods_it_matched_not_those_registered_later(tmp_path, monkeypatch):
    """``--methods '*'`` is kept as written in the config; the manifest's ``resolved_methods`` says what it matched
    then. A run written before that key reads as holding the methods it has rows of (the registry has grown since)."""
    import json

    from bench.report import runs as runs_module

    grown = ["alpha", "beta", "delta"]  # today's registry: delta was registered after the run
    monkeypatch.setattr(runs_module, "_expand", lambda kind, names: grown if kind == "methods" else None)
    run = write_run(tmp_path, methods=("alpha", "beta"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["methods"] = ["*"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert sorted(load_runs([run]).rows["method"].unique()) == ["alpha", "beta"]  # not partial
    manifest["resolved_methods"] = ["alpha", "beta", "gamma"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="is partial"):
        load_runs([run])


@pytest.mark.e2e
def test_a_fashion_run_gets_its_id_plots(tmp_path):
    """The ID plots draw the run's own test set: a Fashion-MNIST run (test set 'fashion', 'ood:mnist' an OOD set)
    got only its per-method reliability diagrams while the others looked for 'mnist'."""
    run = tmp_path / "r"
    assert main(["run", "--benchmark", "fashion", "--profile", "smoke", "--methods", "msp,energy", "--datasets",
                 "fashion,ood:mnist,pmnist", "--device", "cpu", "--no-progress", "--jobs", "1", "--set",
                 "split.max_train=300", "--set", "eval.max_eval=100", "--set", "eval.cost_images=50",
                 "--out", str(run), "--cache-dir", str(tmp_path / "c")]) == 0
    assert main(["report", str(run), "--plots", str(tmp_path / "plots"), "--out", str(tmp_path / "b.md")]) == 0
    written = {p.stem for p in (tmp_path / "plots").iterdir()}
    assert {"risk_coverage", "reliability", "confidence_ood_mnist", "reliability_msp"} <= written
