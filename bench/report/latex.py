"""LaTeX tables that drop into a paper: booktabs, siunitx ``S`` columns, a width budget, short captions.

Each cell is the mean and the sample std over seeds, with the metric's fixed number of decimals, in two siunitx
``S`` columns (the mean aligned on its decimal point, then ``±std`` aligned on its own), plus a zero-width-when-empty
column for the dagger that marks "not significantly worse than the best". The best mean is bold (siunitx keeps the
alignment of bold digits). Bootstrap intervals (``--ci``) never go into these cells: each table is followed by a
separate table of the intervals.

Width budget: a table's natural width is estimated from the font metrics of Computer Modern at ``\\small`` (9 pt).
A table that fits ``Page.column_pt`` is a one-column ``table``; one that fits ``Page.text_pt`` is a ``table*``;
a wider one is split into several ``table*`` by columns, never shrunk (no ``\\resizebox``). The defaults are a
3.25 in column and a 6.75 in text width (ICML's; IEEE's column is 3.5 in, a 10 pt article with 0.75 in margins
gives 3.44 in and 7 in), so the tables also fit those; ``--tex-width COLUMN,TEXT`` gives others (points).

Captions say what the table shows, the number of seeds and the test behind the marks. The conventions shared by all
tables (units, arrows, the test, OOD positives) are printed once: as a note under the first table, or, with
``--preamble FILE``, as a ``\\benchconventions`` macro in the snippet written for the paper's preamble.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench.report.counts import counts_text
from bench.report.groups import MEAN_SET
from bench.report.tables import Cell, Column, ReportTable, short_set

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
        "↓": r"$\downarrow$", "α": r"$\alpha$", "†": r"$^\dagger$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


@dataclass(frozen=True)
class Page:
    column_pt: float = 234.0  # 3.25 in
    text_pt: float = 487.0  # 6.75 in


# ------------------------------------------------------------------------------------------------ width estimate
FONT_PT = 9.0  # \small in a 10 pt article
TABCOLSEP_PT = 4.0
# Advance widths of Computer Modern Roman in em (cmr10 metrics, rounded up); what is not listed counts as 0.75 em.
_EM = {**dict.fromkeys("0123456789", 0.5), **dict(zip("abcdefghijklmnopqrstuvwxyz", (
    0.5, 0.556, 0.444, 0.556, 0.444, 0.306, 0.5, 0.556, 0.278, 0.306, 0.528, 0.278, 0.833, 0.556, 0.5, 0.556,
    0.528, 0.392, 0.394, 0.389, 0.556, 0.528, 0.722, 0.528, 0.528, 0.444))),
    "I": 0.361, "J": 0.514, "L": 0.625, "S": 0.556, "M": 0.917, "W": 1.028, ".": 0.278, ",": 0.278, ":": 0.278,
    ";": 0.278, "-": 0.333, " ": 0.333, "(": 0.389, ")": 0.389, "[": 0.278, "]": 0.278, "/": 0.5, "=": 0.778,
    "+": 0.778, "%": 0.833, "↑": 0.5, "↓": 0.5, "_": 0.5, "'": 0.278}
# Inside S columns at \small, measured with pdflatex (\wd of a one-cell tabular; cmr9 is a little wider than
# cmr10 scaled): digit 4.62 pt, bold digit 5.34 pt, decimal point 2.59 pt, the \pm sign 7.19 pt, superscript dagger
# 3.94 pt.
DIGIT_EM = 0.514
BOLD_DIGIT_EM = 0.594
POINT_EM = 0.288
PM_EM = 0.8
DAGGER_EM = 0.44
THIN_EM = 1 / 6


def text_pt(text: str) -> float:
    return FONT_PT * 1.03 * sum(_EM.get(ch, 0.75) for ch in text)


@dataclass(frozen=True)
class _Col:
    """How one report column is set: formats of its S columns and its estimated width (tabcolsep included)."""
    mean_fmt: str
    std_fmt: str  # '' when no cell has a spread
    dagger: bool
    header: str
    width: float


def _int_digits(x: float) -> int:
    return len(str(int(abs(round(x))))) if math.isfinite(x) else 1


def _s_format(values: list[float], digits: int, sign: str = "") -> str:
    ints = max((_int_digits(v) for v in values), default=1)
    neg = "-" if any(v < 0 for v in values if math.isfinite(v)) else ""
    return f"{sign or neg}{ints}" + (f".{digits}" if digits else "")


def _s_width(fmt: str, bold: bool = False) -> float:
    ints, _, decs = fmt.lstrip("+-").partition(".")
    n_int, n_dec = int(ints), len(decs) and int(decs)
    digit = BOLD_DIGIT_EM if bold else DIGIT_EM
    groups = (n_int - 1) // 3 if n_int >= 5 else 0  # siunitx groups 5+ digit integers with thin spaces
    em = (n_int + n_dec) * digit + (POINT_EM if n_dec else 0) + groups * THIN_EM + (PM_EM if fmt[0] in "+-" else 0)
    return FONT_PT * em


def header_text(col: Column) -> str:
    arrow = {1: " ↑", -1: " ↓"}.get(col.better, "")
    unit = f" ({col.unit})" if col.unit not in ("%", "") and col.unit not in col.label else ""
    return f"{col.label}{unit}{arrow}"


def plan_column(t: ReportTable, j: int, ci: bool) -> _Col:
    col = t.columns[j]
    cells = [t.cells[(m, j)] for m in t.methods if (m, j) in t.cells]
    if ci:
        vals = [x for c in cells for x in (c.ci_low, c.ci_high) if math.isfinite(x)]
        fmt = _s_format(vals, col.digits)
        body = 2 * _s_width(fmt) + FONT_PT * (3 * 0.278 + THIN_EM)  # [ , ]
        return _Col(fmt, fmt, False, header_text(col), max(body, text_pt(header_text(col))) + 2 * TABCOLSEP_PT)
    mean_fmt = _s_format([c.mean for c in cells], col.digits)
    spread = [c.std for c in cells if c.n > 1 and math.isfinite(c.std)]
    std_fmt = _s_format(spread, col.digits, sign="+") if spread else ""
    dagger = any(c.tied for c in cells)
    body = max(_s_width(mean_fmt), _s_width(mean_fmt, bold=any(c.best for c in cells)))
    if std_fmt:
        body += FONT_PT * THIN_EM + _s_width(std_fmt)
    if dagger:
        body += FONT_PT * DAGGER_EM
    return _Col(mean_fmt, std_fmt, dagger, header_text(col), max(body, text_pt(header_text(col))) + 2 * TABCOLSEP_PT)


def _spans(cols: list[Column]) -> list[tuple[str, int, int]]:
    """(set label, first, last) runs of equal set labels over ``cols`` (0-based)."""
    spans: list[tuple[str, int, int]] = []
    for j, c in enumerate(cols):
        if spans and spans[-1][0] == c.set_label:
            spans[-1] = (c.set_label, spans[-1][1], j)
        else:
            spans.append((c.set_label, j, j))
    return spans


def table_width(t: ReportTable, idx: list[int], plans: list[_Col]) -> float:
    """Estimated natural width (pt) of the table of columns ``idx``: method column, column groups, span labels."""
    methods = max([text_pt("Method")] + [text_pt(m) for m in t.methods]) + TABCOLSEP_PT
    width = sum(plans[j].width for j in idx)
    cols = [t.columns[j] for j in idx]
    for label, a, b in _spans(cols):  # a span label wider than its columns widens them
        width += max(0.0, text_pt(label) + 2 * TABCOLSEP_PT - sum(plans[idx[k]].width for k in range(a, b + 1)))
    return methods + width - TABCOLSEP_PT  # @{} at the right edge


def split(t: ReportTable, plans: list[_Col], page: Page) -> tuple[str, list[list[int]]]:
    """('table' | 'table*', column index chunks): one chunk when it fits the column or the page; else the fewest
    chunks of consecutive columns that each fit the page, as even in size as they can be."""
    every = list(range(len(t.columns)))
    if table_width(t, every, plans) <= page.column_pt:
        return "table", [every]
    if table_width(t, every, plans) <= page.text_pt or len(every) == 1:
        return "table*", [every]
    for k in range(2, len(every) + 1):
        size = math.ceil(len(every) / k)
        chunks = [every[i:i + size] for i in range(0, len(every), size)]
        if all(table_width(t, c, plans) <= page.text_pt for c in chunks):
            env = "table" if all(table_width(t, c, plans) <= page.column_pt for c in chunks) else "table*"
            return env, chunks
    return "table*", [[j] for j in every]


# ------------------------------------------------------------------------------------------------ cells and text
def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _row(t: ReportTable, m: str, idx: list[int], plans: list[_Col], ci: bool) -> str:
    out = [tex_escape(m)]
    for j in idx:
        cell: Cell | None = t.cells.get((m, j))
        p, d = plans[j], t.columns[j].digits
        if ci:
            ok = cell is not None and math.isfinite(cell.ci_low)
            out += [_num(cell.ci_low, d), _num(cell.ci_high, d)] if ok else ["{--}", "{}"]
            continue
        if cell is None or not math.isfinite(cell.mean):
            out += ["{--}"] + (["{}"] if p.std_fmt else []) + ([""] if p.dagger else [])
            continue
        out.append((r"\bfseries " if cell.best else "") + _num(cell.mean, d))
        if p.std_fmt:
            out.append(rf"\pm {_num(cell.std, d)}" if cell.n > 1 and math.isfinite(cell.std) else "{}")
        if p.dagger:
            out.append(r"\(^\dagger\)" if cell.tied else "")
    return " & ".join(out) + r" \\"


def _colspec(idx: list[int], plans: list[_Col], ci: bool) -> tuple[str, list[int]]:
    """tabular preamble and the number of tabular columns of each report column."""
    spec, widths = ["@{}l"], []
    for j in idx:
        p = plans[j]
        if ci:
            spec.append(rf"@{{\hspace{{{TABCOLSEP_PT:g}pt}}[}}S[table-format={p.mean_fmt}]@{{,\,}}"
                        rf"S[table-format={p.std_fmt}]@{{]\hspace{{{TABCOLSEP_PT:g}pt}}}}")
            widths.append(2)
            continue
        spec.append(rf"S[table-format={p.mean_fmt},reset-text-series=false,text-series-to-math=true]")
        n = 1
        if p.std_fmt:
            spec.append(rf"@{{\,}}S[table-format={p.std_fmt}]")
            n += 1
        if p.dagger:
            spec.append("@{}l")
            n += 1
        widths.append(n)
    if ci:
        spec[-1] = spec[-1].replace(rf"@{{]\hspace{{{TABCOLSEP_PT:g}pt}}}}", "@{]}")
    return "".join(spec) + "@{}", widths


def short_title(t: ReportTable) -> str:
    base = {"id": "In-distribution", "occlusion": "Occlusion", "adversarial": "Adversarial",
            "ood-near": "Near OOD detection", "ood-far": "Far OOD detection", "ood": "OOD detection",
            "cost": "Cost"}.get(t.key) or t.title.split(":")[0]  # other groups: their title's head
    sets = {c.eval_set for c in t.columns}
    if not t.part and len(sets) == 1 and MEAN_SET not in sets:
        only = short_set(next(iter(sets)))
        return f"{base} ({only} test)" if t.key == "id" else f"{base} ({only})"
    return f"{base}: {t.part}" if t.part else base


def short_caption(t: ReportTable, ci: bool, part: str) -> str:
    return _short_caption(t, ci, part) + _counts(t)


def _counts(t: ReportTable) -> str:
    """The table's image and error counts (bench/report/counts.py) as a last caption sentence; '' without them."""
    text = counts_text(t.counts, short_set, dash="--")
    return f" {tex_escape(text[0].upper() + text[1:])}." if text else ""


def _short_caption(t: ReportTable, ci: bool, part: str) -> str:
    title = tex_escape(short_title(t)) + part
    if ci:
        return (f"{title}: 95\\% percentile-bootstrap intervals of the mean over {t.units} seeds "
                "(means in the table above).")
    if t.units < 2:
        return f"{title}. One seed (no spread, no test); bold: best."
    return (f"{title}. Mean $\\pm$ std over {t.units} seeds; bold: best mean; $^\\dagger$: not significantly "
            f"worse than the best (paired $t$-test, Holm, $\\alpha = {t.alpha:g}$).")


def conventions(tables: list[ReportTable]) -> str:
    """The conventions shared by ``tables``, as LaTeX text: printed once."""
    keys = {t.key for t in tables}
    cols = [c for t in tables for c in t.columns]
    raw = sorted({c.label for c in cols if c.unit == "" and c.better != 0})
    parts = ["Values in \\% unless a unit is given" + (f" ({', '.join(raw)}: no unit)" if raw else ""),
             "$\\uparrow$/$\\downarrow$: higher/lower is better",
             "std: sample standard deviation over seeds (and folds)"]
    if any(t.units > 1 for t in tables):
        parts.append("$^\\dagger$: a two-sided paired $t$-test across seeds against the method with the best mean "
                     "of the column, Holm-corrected over the methods in the column, does not reject equality")
    if any(k.startswith("ood") for k in keys):
        parts.append("OOD detection: positives are in-distribution test images (OpenOOD counts OOD as positive)")
    if any(c.eval_set == MEAN_SET for c in cols):
        parts.append("mean: average over the table's sets, per seed")
    if "cost" in keys:
        parts.append("cost: s = seconds, MiB = $2^{20}$ bytes, peak RSS is the whole process's; the first epoch "
                     "is reported apart")
    return "; ".join(parts) + "."  # LaTeX as written: nothing here comes from the user


def _label(prefix: str, t: ReportTable, i: int, n: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", t.part).strip("-").lower()
    return f"{prefix}-{t.key}" + (f"-{slug}" if slug else "") + (f"-{i + 1}" if n > 1 else "")


def _one(t: ReportTable, page: Page, ci: bool, label_prefix: str, note: str) -> list[str]:
    plans = [plan_column(t, j, ci) for j in range(len(t.columns))]
    env, chunks = split(t, plans, page)
    out = []
    for i, idx in enumerate(chunks):
        part = f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else ""
        spec, ncols = _colspec(idx, plans, ci)
        cols = [t.columns[j] for j in idx]
        out += [rf"\begin{{{env}}}[tbp]", r"\centering", r"\small",
                rf"\caption{{{short_caption(t, ci, part)}}}",
                rf"\label{{{_label(label_prefix, t, i, len(chunks))}{'-ci' if ci else ''}}}",
                rf"\setlength{{\tabcolsep}}{{{TABCOLSEP_PT:g}pt}}",
                rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        if any(c.set_label for c in cols):
            heads, rules, start = [], [], 2
            for label, a, b in _spans(cols):
                span = sum(ncols[a:b + 1])
                heads.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(label)}}}")
                if label:
                    rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
                start += span
            out += [" & " + " & ".join(heads) + r" \\", " ".join(rules)]
        out.append("Method & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(plans[j].header)}}}"
                                            for j, n in zip(idx, ncols)) + r" \\")
        out.append(r"\midrule")
        out += [_row(t, m, idx, plans, ci) for m in t.methods]
        out += [r"\bottomrule", r"\end{tabular}"]
        if note and i == 0:
            out += [r"\par\smallskip", rf"\parbox{{\linewidth}}{{\footnotesize\raggedright {note}}}"]
            note = ""
        out += [rf"\end{{{env}}}", ""]
    return out


PACKAGES = ("booktabs", "siunitx")


def preamble_snippet(tables: list[ReportTable]) -> str:
    """What the paper's preamble needs for the tables, and ``\\benchconventions`` to print once (e.g. in a
    footnote)."""
    return ("% Preamble for tables written by `python -m bench report` (siunitx v3, TeX Live 2021 or later).\n"
            + "".join(f"\\usepackage{{{p}}}\n" for p in PACKAGES)
            + f"\\newcommand{{\\benchconventions}}{{{conventions(tables)}}}\n")


def to_latex(tables: list[ReportTable], label_prefix: str = "tab:bench", page: Page | None = None,
             comment: str = "", conventions_note: bool = True) -> str:
    """The tables as LaTeX; the conventions as a note under the first table unless ``conventions_note`` is False
    (then the preamble snippet carries them)."""
    page = page or Page()
    out = ["% Generated by `python -m bench report`; needs \\usepackage{booktabs} and \\usepackage{siunitx} (v3)."]
    if comment:
        out.append("% " + comment.replace("\n", "\n% "))
    note = conventions(tables) if conventions_note else ""
    for t in tables:
        out += _one(t, page, False, label_prefix, note)
        note = ""
        if t.ci and t.units > 1:
            out += _one(t, page, True, label_prefix, "")
    return "\n".join(out)
