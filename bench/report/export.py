"""Writers for report tables: Markdown, LaTeX (booktabs), CSV (long, numeric) and HTML.

Every writer takes the ``ReportTable`` list of ``bench.report.tables.build_tables`` and returns text; nothing here
computes a statistic. Marks: the best mean per column is bold; a method not significantly different from the best
is underlined (LaTeX) or carries a dagger (Markdown, HTML). The CSV keeps numbers numeric (empty = not available)
and holds the flags as 0/1 columns.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable

from bench.errors import UsageError
from bench.report.latex import Page, to_latex
from bench.report.tables import Cell, Column, ReportTable

FORMATS = ("md", "latex", "csv", "html")
SUFFIXES = {".md": "md", ".markdown": "md", ".tex": "latex", ".csv": "csv", ".html": "html", ".htm": "html"}
ARROW = {1: "↑", -1: "↓", 0: ""}


def format_for(path_suffix: str) -> str:
    fmt = SUFFIXES.get(path_suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of an --out file ending in {path_suffix or '(no suffix)'!r}; use "
                         f"one of {', '.join(SUFFIXES)} or give --format {'|'.join(FORMATS)}")
    return fmt


def _num(x: float, digits: int) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.{digits}f}" if digits == 0 and abs(x) >= 10_000 else f"{x:.{digits}f}"


def cell_text(cell: Cell | None, col: Column, pm: str = "±", ci: bool = False) -> str:
    if cell is None:
        return ""
    text = _num(cell.mean, col.digits)
    if cell.n > 1 and math.isfinite(cell.std):
        text += f" {pm} {_num(cell.std, col.digits)}"
    if ci and math.isfinite(cell.ci_low):
        text += f" [{_num(cell.ci_low, col.digits)}, {_num(cell.ci_high, col.digits)}]"
    return text


def _header(col: Column) -> str:
    arrow = ARROW[col.better]
    unit = f" ({col.unit})" if col.unit not in ("%", "") and col.unit not in col.label else ""
    return f"{col.label}{unit}{' ' + arrow if arrow else ''}"


def _flat_header(col: Column) -> str:
    return f"{col.set_label} {_header(col)}" if col.set_label else _header(col)


def _title(t: ReportTable) -> str:
    return f"{t.title} — {t.part}" if t.part else t.title


def _mark(cell, text: str, bold: str) -> str:
    """The best value of a column in ``bold`` (a format string), values not significantly worse with a dagger."""
    if cell is None or not text:
        return text
    if cell.best:
        return bold.format(text)
    return text + " †" if cell.tied else text


# ----------------------------------------------------------------------------------------------- markdown
def to_markdown(tables: list[ReportTable], preamble: str = "") -> str:
    out = [preamble.rstrip() + "\n"] if preamble else []
    for t in tables:
        out.append(f"### {_title(t)}\n")
        out.append("| method | " + " | ".join(_md_escape(_flat_header(c)) for c in t.columns) + " |")
        out.append("|:--|" + "--:|" * len(t.columns))
        for m in t.methods:
            cells = []
            for j, c in enumerate(t.columns):
                cell = t.cells.get((m, j))
                cells.append(_mark(cell, _md_escape(cell_text(cell, c, ci=t.ci)), "**{}**"))
            out.append(f"| {_md_escape(m)} | " + " | ".join(cells) + " |")
        out.append("")
        out.append(f"*{_md_escape(t.caption('†'))}*")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


# ----------------------------------------------------------------------------------------------- latex
# The LaTeX writer (siunitx cells, width budget, short captions) lives in bench.report.latex.
# ----------------------------------------------------------------------------------------------- csv
CSV_FIELDS = ("group", "eval_set", "metric", "method", "n", "mean", "std", "ci_low", "ci_high", "best",
              "not_worse_than_best", "p_holm", "higher_is_better")


def to_csv(tables: list[ReportTable]) -> str:
    """Long format, one row per (group, eval set, metric, method); numbers numeric, nan written empty."""
    def num(x: float | None) -> str | float:
        return "" if x is None or not math.isfinite(x) else repr(float(x))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        for j, c in enumerate(t.columns):
            for m in t.methods:
                cell = t.cells.get((m, j))
                if cell is None:
                    continue
                w.writerow([t.key, c.eval_set, c.metric, m, cell.n, num(cell.mean), num(cell.std), num(cell.ci_low),
                            num(cell.ci_high), int(cell.best), int(cell.tied), num(cell.p_holm),
                            {1: 1, -1: 0}.get(c.better, "")])
        # the counts under the table (bench/report/counts.py): images per set, each method's mean errors per seed
        for eval_set, count in t.counts.items():
            for m in t.methods:
                values = {"n_images": count.images, "n_errors": count.errors.get(m)}
                for metric, value in values.items():
                    if value is not None and (metric == "n_images" or count.errors):
                        w.writerow([t.key, eval_set, metric, m, t.units, num(value), "", "", "", 0, 0, "", ""])
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- html
_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0;"
        "border-top:2px solid #000;border-bottom:2px solid #000}th,td{padding:.25em .6em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}thead tr:last-child th{border-bottom:1px solid #000}"
        "caption{caption-side:bottom;text-align:left;font-size:.9em;max-width:60em}")

def to_html(tables: list[ReportTable], title: str = "bench report", preamble: str = "") -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style>", "</head><body>", f"<h1>{e(title)}</h1>"]
    if preamble:
        out.append(f"<p>{e(preamble)}</p>")
    for t in tables:
        out.append(f"<h2>{e(_title(t))}</h2>")
        out.append("<table>")
        out.append(f"<caption>{e(t.caption('†'))}</caption>")
        out.append("<thead>")
        if any(c.set_label for c in t.columns):
            spans: list[list] = []
            for c in t.columns:
                if spans and spans[-1][0] == c.set_label:
                    spans[-1][1] += 1
                else:
                    spans.append([c.set_label, 1])
            out.append("<tr><th></th>" + "".join(f"<th colspan=\"{n}\" style=\"text-align:center\">{e(s)}</th>"
                                                 for s, n in spans) + "</tr>")
        out.append("<tr><th>method</th>" + "".join(f"<th>{e(_header(c))}</th>" for c in t.columns) + "</tr>")
        out.append("</thead><tbody>")
        for m in t.methods:
            tds = []
            for j, c in enumerate(t.columns):
                cell = t.cells.get((m, j))
                tds.append(f"<td>{_mark(cell, e(cell_text(cell, c, ci=t.ci)), '<b>{}</b>')}</td>")
            out.append(f"<tr><td>{e(m)}</td>{''.join(tds)}</tr>")
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


WRITERS: dict[str, Callable[..., str]] = {"md": to_markdown, "latex": to_latex, "csv": to_csv, "html": to_html}


def relayout_for(tables: list[ReportTable], fmt: str, layout: str | None) -> list[ReportTable]:
    from bench.report.layout import WIDE_VIEWS, relayout

    if layout is None and fmt != "latex":  # one table per group; a wide view cut as WIDE_VIEWS says
        return [x for t in tables for x in relayout([t], WIDE_VIEWS.get(t.key, "group"))]
    return relayout(tables, layout or "auto")


def render(tables: list[ReportTable], fmt: str, preamble: str = "", layout: str | None = None,
           page: Page | None = None, conventions_note: bool = True) -> str:
    """``tables`` (one per group, from ``build_tables``) in ``fmt``. ``layout`` (layout.LAYOUTS) slices them; by
    default LaTeX takes ``auto`` (the layouts papers use) and Markdown/HTML keep one table per group. The CSV is
    long format and ignores the layout. ``page`` and ``conventions_note`` are LaTeX's (see bench.report.latex)."""
    if fmt not in WRITERS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "csv":
        tables = relayout_for(tables, fmt, layout)
    if fmt in ("md", "html"):
        return WRITERS[fmt](tables, preamble=preamble)
    if fmt == "latex":
        return to_latex(tables, page=page, comment=preamble, conventions_note=conventions_note)
    return WRITERS[fmt](tables)
