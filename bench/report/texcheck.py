"""Compile LaTeX tables inside an ordinary article and count what overflows: the check behind "fits the page".

A table file from ``bench report --out x.tex`` is ``\\input`` into one of two templates that stand for a paper: 10 pt
article, 0.75 in margins, booktabs + amsmath + siunitx, one column or two columns. pdflatex runs in batch mode; the
log's ``Overfull \\hbox (N pt too wide)`` lines and its errors (``! ...``) are the result. Used by the tests and by
hand::

    python -m bench.report.texcheck results/leaderboard.tex                # both templates: errors and overfull boxes
    python -m bench.report.texcheck results/leaderboard.tex --png page.png --template twocolumn   # also page 1 as PNG
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = {
    "onecolumn": r"\documentclass[10pt]{article}",
    "twocolumn": r"\documentclass[10pt,twocolumn]{article}",
}
PACKAGES = r"""\usepackage[margin=0.75in]{geometry}
\usepackage{booktabs}
\usepackage{amsmath}
\usepackage{siunitx}
"""
# Overfull boxes narrower than this are TeX rounding, invisible on paper; wider ones are what the check fails on.
TOLERANCE_PT = 3.0
_OVERFULL = re.compile(r"^Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)", re.M)


@dataclass(frozen=True)
class Compiled:
    template: str
    errors: list[str]  # the log's "! ..." lines, and floats too large for the page
    overfull_pt: list[float]  # every overfull \hbox, in points, in log order
    pages: int
    log: str

    @property
    def too_wide(self) -> list[float]:
        return [w for w in self.overfull_pt if w > TOLERANCE_PT]


def pdflatex() -> str | None:
    return shutil.which("pdflatex")


def document(template: str, body_files: list[str]) -> str:
    """The article that inputs ``body_files`` (names relative to the build folder), a page break after each."""
    if template not in TEMPLATES:
        raise ValueError(f"template {template!r}: one of {', '.join(TEMPLATES)}")
    inputs = "\n".join(rf"\input{{{name}}}" + "\n\\clearpage" for name in body_files)
    text = ("Tables written by bench, set in an ordinary article to check that they fit. " * 12)
    return f"{TEMPLATES[template]}\n{PACKAGES}\\begin{{document}}\n{text}\n\n{inputs}\n\\end{{document}}\n"


def compile_tables(tex: list[str], template: str, build_dir: Path | None = None, timeout: float = 120.0
                   ) -> tuple[Compiled, Path]:
    """Compile the table texts ``tex`` (one file each) in ``template``; returns the result and the PDF's path."""
    exe = pdflatex()
    if exe is None:
        raise FileNotFoundError("pdflatex is not installed (Debian: apt-get install texlive-latex-base "
                                "texlive-latex-recommended texlive-science)")
    build = Path(build_dir or tempfile.mkdtemp(prefix="bench-tex-"))
    build.mkdir(parents=True, exist_ok=True)
    names = []
    for i, text in enumerate(tex):
        (build / f"tables{i}.tex").write_text(text)
        names.append(f"tables{i}")
    (build / f"{template}.tex").write_text(document(template, names))
    proc = subprocess.run([exe, "-interaction=batchmode", "-halt-on-error", f"{template}.tex"], cwd=build,
                          capture_output=True, timeout=timeout, check=False)
    log_path = build / f"{template}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else proc.stdout.decode(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("! ") or "Float too large" in line]
    if proc.returncode != 0 and not errors:
        errors = [f"pdflatex exited with {proc.returncode}"]
    pages = re.search(r"Output written on .*?\((\d+) pages?", log)
    result = Compiled(template, errors, [float(w) for w in _OVERFULL.findall(log)],
                      int(pages.group(1)) if pages else 0, log)
    return result, build / f"{template}.pdf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report.texcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="LaTeX table files (as written by bench report)")
    p.add_argument("--template", choices=sorted(TEMPLATES), action="append",
                   help="article template (default: both)")
    p.add_argument("--png", type=Path, help="also write page --page of the (last) template's PDF as PNG here")
    p.add_argument("--page", type=int, default=1, help="page for --png (1)")
    p.add_argument("--dpi", type=int, default=110, help="resolution for --png (110)")
    args = p.parse_args(argv)
    texts = []
    for f in args.files:
        if not f.is_file():
            print(f"error: {f} does not exist", file=sys.stderr)
            return 2
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:  # bench writes UTF-8 tables; anything else would be a traceback here
            print(f"error: {f} is not UTF-8 text; give a table file written by bench report (UTF-8)", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: cannot read {f}: {e.strerror or e}", file=sys.stderr)
            return 2
    if pdflatex() is None:
        print("error: pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended "
              "texlive-science)", file=sys.stderr)
        return 2
    worst = 0
    pdf = None
    for template in args.template or list(TEMPLATES):
        res, pdf = compile_tables(texts, template)
        wide = ", ".join(f"{w:.0f}" for w in res.overfull_pt) or "none"
        print(f"{template}: {res.pages} pages, {len(res.errors)} errors, {len(res.overfull_pt)} overfull \\hbox "
              f"({len(res.too_wide)} wider than {TOLERANCE_PT:g} pt; pt: {wide})")
        for e in res.errors[:5]:
            print(f"  {e}")
        worst = max(worst, 1 if res.errors or res.too_wide else 0)
    if args.png and pdf is not None:
        if shutil.which("pdftoppm") is None:
            print("error: pdftoppm is not installed (apt-get install poppler-utils)", file=sys.stderr)
            return 2
        stem = args.png.with_suffix("")
        subprocess.run(["pdftoppm", "-png", "-r", str(args.dpi), "-f", str(args.page), "-l", str(args.page),
                        "-singlefile", str(pdf), str(stem)], check=True)
        print(f"wrote {stem}.png")
    return worst


if __name__ == "__main__":
    sys.exit(main())
