"""LaTeX tables for papers: siunitx cells checked by hand, intervals in their own table, the width budget, layouts,
the report CSV read back, and every table of a fixture run (and the committed leaderboard) compiled with pdflatex
in a one-column and a two-column article without an error or an overfull box.

The compile tests skip when pdflatex is missing, unless ``BENCH_REQUIRE_LATEX`` is set (CI sets it, so a missing
TeX fails there). Debian: ``apt-get install texlive-latex-base texlive-latex-recommended texlive-science``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from _runs import write_run
from bench.cli import main
from bench.report.export import render, to_csv, to_markdown
from bench.report.from_csv import read_report_csv
from bench.report.latex import Page, plan_column, split, table_width, to_latex
from bench.report.layout import LAYOUTS, numeric_severity, relayout, set_labels
from bench.report.runs import load_runs
from bench.report.tables import Cell, Column, ReportTable, build_tables
from bench.report.texcheck import TOLERANCE_PT, compile_tables, pdflatex

ROOT = Path(__file__).resolve().parents[1]
needs_latex = pytest.mark.skipif(pdflatex() is None and not os.environ.get("BENCH_REQUIRE_LATEX"),
                                 reason="pdflatex is not installed (apt-get install texlive-latex-base "
                                 "texlive-latex-recommended texlive-science); CI sets BENCH_REQUIRE_LATEX")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("latex"))


@pytest.fixture(scope="module")
def tables(run_dir):
    return build_tables(load_runs([run_dir]), ci=True)


def _rows(tex: str, method: str) -> list[str]:
    return [line for line in tex.splitlines() if line.startswith(f"{method} & ")]


# ------------------------------------------------------------------------------------------------ cells
def test_cells_are_mean_and_std_in_s_columns_with_marks(tables):
    tex = to_latex([t for t in tables if t.key == "id"])
    # alpha: Acc 90, 91, 92 -> 91.00 +- 1.00, the best; AUROC 70, 72, 74 -> 72.00 +- 2.00, not significantly worse
    # than beta's 75 (Holm p = 0.12 >= 0.05, test_report); ECE 5, 6, 7 -> 6.00 +- 1.00, worse than beta's constant
    # 3 lower (zero-variance difference: p = 0), so the ECE column has no dagger column at all.
    assert _rows(tex, "alpha")[0] == (r"alpha & \bfseries 91.00 & \pm 1.00 & 72.00 & \pm 2.00 & \(^\dagger\) & "
                                      r"6.00 & \pm 1.00 \\")
    # beta: Acc 89, 90.5, 91 -> mean 90.1667, std sqrt(((-7/6)^2 + (1/3)^2 + (5/6)^2) / 2) = sqrt(13/12) = 1.0408
    assert _rows(tex, "beta")[0].startswith(r"beta & 90.17 & \pm 1.04 & \bfseries 75.00 & \pm 0.00 &  & ")
    # every S column is as wide as its widest value: 2 integer digits and the metric's 2 decimals
    assert r"S[table-format=2.2,reset-text-series=false,text-series-to-math=true]@{\,}S[table-format=+1.2]" in tex
    assert "[" not in _rows(tex, "alpha")[0] and r"\resizebox" not in tex


def test_intervals_only_on_request_and_in_their_own_table(tables):
    id_t = [t for t in tables if t.key == "id"]
    tex = to_latex(id_t)
    blocks = tex.split(r"\begin{table")[1:]
    assert len(blocks) == 2 and "label{tab:bench-id-ci}" in blocks[1]
    # exact bootstrap of 90, 91, 92 at 95% spans min..max (test_report): [90.00, 92.00]
    assert _rows(blocks[1], "alpha")[0].startswith("alpha & 90.00 & 92.00 & ")
    assert all("[" not in r for r in _rows(blocks[0], "alpha"))
    from dataclasses import replace

    assert r"tab:bench-id-ci" not in to_latex([replace(t, ci=False) for t in id_t])


def _wide_table(n_methods: int = 15, n_cols: int = 10) -> ReportTable:
    cols = [Column("mnist", f"m{j}", "", f"Metric{j}", 1, "%", 2) for j in range(n_cols)]
    methods = [f"longmethodname{i:02d}" for i in range(n_methods)]
    cells = {(m, j): Cell(95.27 - i, 10.67, 3, best=(i == 0), tied=(i == 1), p_holm=0.5 if i == 1 else 0.01)
             for i, m in enumerate(methods) for j in range(n_cols)}
    return ReportTable("id", "wide", methods, cols, cells, 3)


def test_width_budget_one_column_page_or_split():
    page = Page()
    narrow = _wide_table(n_cols=2)
    plans = [plan_column(narrow, j, False) for j in range(2)]
    assert split(narrow, plans, page) == ("table", [[0, 1]])
    wide = _wide_table(n_cols=10)
    plans = [plan_column(wide, j, False) for j in range(10)]
    env, chunks = split(wide, plans, page)
    assert env == "table*" and len(chunks) > 1
    assert sum(chunks, []) == list(range(10))  # every column once, in order
    assert all(table_width(wide, c, plans) <= page.text_pt for c in chunks)
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 1  # as even as they can be
    k = len(chunks) - 1  # fewest: with one chunk fewer, some chunk would be too wide
    size = math.ceil(10 / k)
    assert any(table_width(wide, list(range(10))[i:i + size], plans) > page.text_pt for i in range(0, 10, size))
    assert table_width(wide, list(range(10)), plans) > page.text_pt
    tex = to_latex([wide])
    assert tex.count(r"\begin{table*}") == len(chunks) and "(1 of " in tex


def test_no_spread_and_missing_values():
    t = _wide_table(n_methods=2, n_cols=1)
    t.cells[("longmethodname01", 0)] = Cell(float("nan"), float("nan"), 0)
    t.cells[("longmethodname00", 0)] = Cell(5.0, float("nan"), 1, best=True)
    t = ReportTable("id", "x", t.methods, t.columns, t.cells, 1)
    tex = to_latex([t])
    assert _rows(tex, "longmethodname00") == [r"longmethodname00 & \bfseries 5.00 \\"]  # no std column, no dagger
    assert _rows(tex, "longmethodname01") == [r"longmethodname01 & {--} \\"]
    assert "One seed (no spread, no test)" in tex


# ------------------------------------------------------------------------------------------------ layouts
def test_numeric_severity_and_set_labels():
    assert numeric_severity("fgsm:eps=0.1") == ("fgsm", "eps", 0.1)
    assert numeric_severity("occlusion:random-squares=0.5") == ("occlusion", "random-squares", 0.5)
    for name in ("pmnist:triple", "uap:xi=4,p=2", "mnist", "fgsm:eps=inf"):
        assert numeric_severity(name) is None
    assert set_labels(["uap:xi=0.2,p=inf,n=200", "uap:xi=4,p=2,n=200"]) == {
        "uap:xi=0.2,p=inf,n=200": "xi=0.2,p=inf", "uap:xi=4,p=2,n=200": "xi=4,p=2"}
    assert set_labels(["ood:fashion", "ood:uniform", "mean"]) == {"ood:fashion": "fashion",
                                                                   "ood:uniform": "uniform", "mean": "mean"}
    assert set_labels(["fgsm:eps=0.1", "pgd:eps=0.1"]) == {"fgsm:eps=0.1": "fgsm:eps=0.1", "pgd:eps=0.1": "pgd:eps=0.1"}


def test_layouts_move_cells_without_recomputing(tables):
    n_cells = sum(len(t.cells) for t in tables)
    for layout in LAYOUTS:
        out = relayout(tables, layout)
        assert sum(len(t.cells) for t in out) == n_cells, layout
    auto = relayout(tables, "auto")
    assert [(t.key, t.part) for t in auto] == [
        ("id", ""), ("adversarial", "fgsm by eps, Acc"), ("adversarial", "fgsm by eps, AUROC"),
        ("ood-near", ""), ("ood-far", ""), ("cost", "")]  # a group of one set: one methods x metrics table
    fgsm = auto[1]
    assert [c.label for c in fgsm.columns] == ["0.1", "0.3"]  # severity values, in order
    group = next(t for t in tables if t.key == "adversarial")
    j = next(i for i, c in enumerate(group.columns) if c.eval_set == "fgsm:eps=0.3" and c.metric == "accuracy")
    assert fgsm.cells[("beta", 1)] is group.cells[("beta", j)]  # 15 + (0 + 1 + 2) / 3 = 16, the best
    assert fgsm.cells[("beta", 1)].mean == 16.0 and fgsm.cells[("beta", 1)].best
    per_set = relayout(tables, "metrics")
    assert [t.part for t in per_set if t.key == "adversarial"] == ["fgsm:eps=0.1", "fgsm:eps=0.3"]
    assert relayout(tables, "group") == tables


def test_markdown_keeps_one_table_per_group_and_every_number(tables):
    md = render(tables, "md")
    assert md == to_markdown(tables)  # the default layout of Markdown is the group table
    assert "| alpha | **91.00 ± 1.00 [90.00, 92.00]** |" in md  # intervals kept inline: no page width
    assert "### Adversarial: accuracy and misclassification AUROC — Acc" in render(tables, "md", layout="sets")


# ------------------------------------------------------------------------------------------------ the report CSV
def test_report_csv_round_trip_gives_the_same_tables(tables, tmp_path):
    path = tmp_path / "board.csv"
    path.write_text(to_csv(tables))
    back = read_report_csv(path, ci=True)
    assert to_latex(back) == to_latex(tables)
    assert render(back, "md") == render(tables, "md")
    # the mark is re-read from p_holm at the requested alpha: alpha's AUROC p = 0.12 is a tie at 0.05, not at 0.5
    loose = read_report_csv(path, alpha=0.5)
    id_t = next(t for t in loose if t.key == "id")
    assert not id_t.cells[("alpha", 1)].tied and next(t for t in back if t.key == "id").cells[("alpha", 1)].tied
    assert [t.key for t in read_report_csv(path, groups=["ood-*"])] == ["ood-near", "ood-far"]


def test_committed_leaderboard_tex_is_its_csv_typeset(tmp_path):
    out = tmp_path / "leaderboard.tex"
    assert main(["report", str(ROOT / "results" / "leaderboard.csv"), "--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "results" / "leaderboard.tex").read_text(), (
        "regenerate: python -m bench report results/leaderboard.csv --out results/leaderboard.tex")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_layout_preamble_and_csv_input(run_dir, tmp_path, capsys):
    tex, pre = tmp_path / "t.tex", tmp_path / "pre.tex"
    assert main(["report", str(run_dir), "--out", str(tex), "--preamble", str(pre), "--layout", "sets"]) == 0
    snippet = pre.read_text()
    assert r"\usepackage{siunitx}" in snippet and r"\newcommand{\benchconventions}{Values in" in snippet
    assert r"\parbox" not in tex.read_text()  # the conventions went to the preamble, not under a table
    csv, tex2 = tmp_path / "b.csv", tmp_path / "b.tex"
    assert main(["report", str(run_dir), "--out", str(csv), "--out", str(tex)]) == 0
    assert main(["report", str(csv), "--out", str(tex2)]) == 0
    strip = lambda text: re.sub(r"^% (Runs|Tables of).*\n", "", text, flags=re.M)  # noqa: E731
    assert strip(tex2.read_text()) == strip(tex.read_text())


@pytest.mark.parametrize("extra, message", [
    (["--tex-width", "300"], "--tex-width"),
    (["--tex-width", "500,300"], "COLUMN <= TEXT"),
    (["CSV", "--plots"], "--plots needs the run directories"),
    (["NOTCSV"], "is not a CSV written by `bench report`"),
])
def test_cli_bad_latex_input_is_one_line(run_dir, tmp_path, capsys, extra, message):
    csv = tmp_path / "b.csv"
    csv.write_text(to_csv(build_tables(load_runs([run_dir]))))
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    args = [a.replace("NOTCSV", str(bad)).replace("CSV", str(csv)) for a in extra]
    source = [] if any(a.endswith(".csv") for a in args) else [str(run_dir)]
    assert main(["report", *source, *args, "--out", str(tmp_path / "o.tex")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.tex").exists()


# ------------------------------------------------------------------------------------------------ pdflatex
def _documents(run_dir: Path, template: str) -> dict[str, str]:
    """Every table bench writes for the fixture run (each layout, intervals, one seed), a wide stress table, and
    (two-column only, the narrower: it takes seconds) the committed leaderboard."""
    tables = build_tables(load_runs([run_dir]), ci=True)
    docs = {f"fixture --layout {lay}": render(tables, "latex", layout=lay) for lay in LAYOUTS}
    docs["fixture, one seed"] = render(build_tables(load_runs([write_run(run_dir.parent, "one", seeds=(0,))])),
                                       "latex")
    docs["stress: 15 long names x 10 metrics"] = to_latex([_wide_table()])
    from bench.report.latex import preamble_snippet

    macro = [line for line in preamble_snippet(tables).splitlines() if line.startswith(r"\newcommand")]
    docs["fixture, conventions as \\benchconventions in a footnote"] = (
        "\n".join(macro) + "\nResults\\footnote{\\benchconventions}.\n" + to_latex(tables, conventions_note=False))
    if template == "twocolumn":
        docs["results/leaderboard.tex"] = (ROOT / "results" / "leaderboard.tex").read_text()
    return docs


@needs_latex
@pytest.mark.parametrize("template", ["onecolumn", "twocolumn"])
def test_every_table_compiles_and_fits(run_dir, template, tmp_path):
    docs = _documents(run_dir, template)
    res, _ = compile_tables(list(docs.values()), template, tmp_path / "all")
    if res.errors or res.too_wide:  # name the culprits
        bad = []
        for name, text in docs.items():
            one, _ = compile_tables([text], template, tmp_path / re.sub(r"\W+", "_", name))
            if one.errors or one.too_wide:
                bad.append(f"{name}: errors {one.errors[:2]}, overfull {one.too_wide} pt")
        pytest.fail(f"{template}: " + "; ".join(bad or [f"errors {res.errors[:3]}, overfull {res.too_wide}"]))
    assert res.pages >= len(docs) and all(w <= TOLERANCE_PT for w in res.overfull_pt)


@needs_latex
def test_width_estimate_is_within_two_percent_of_pdflatex(tables, tmp_path):
    """The budget is only as good as the estimate: each tabular's real width (boxed and measured by TeX) against
    ``table_width``, for every layout of the fixture, its intervals and the stress table."""
    sliced = [t for lay in ("auto", "group", "metrics") for t in relayout(tables, lay)] + [_wide_table()]
    estimates = []
    for t in sliced:
        for ci in (False, True) if t.ci else (False,):
            plans = [plan_column(t, j, ci) for j in range(len(t.columns))]
            estimates += [table_width(t, c, plans) for c in split(t, plans, Page())[1]]
    tex = to_latex(sliced).replace(r"\begin{tabular}", r"\setbox0\hbox{\begin{tabular}").replace(
        r"\end{tabular}", r"\end{tabular}}\typeout{WIDTH \the\wd0}\box0")
    res, _ = compile_tables([tex], "onecolumn", tmp_path)
    actual = [float(w) for w in re.findall(r"WIDTH ([\d.]+)pt", res.log)]
    assert not res.errors and len(actual) == len(estimates)
    ratios = [e / a for e, a in zip(estimates, actual)]
    assert all(0.98 <= r <= 1.04 for r in ratios), [round(r, 3) for r in ratios]
