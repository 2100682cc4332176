"""How many images a report table rests on: the images of each of its eval sets and, for labelled sets, how many of
them each method misclassified. A misclassification AUROC over 130 errors is a coarser number than one over 1,300,
so every table says it under its caption (Markdown, HTML, LaTeX) and the report CSV keeps it as rows.

The counts come from each cell's ``n_images`` and ``n_errors`` rows (bench/run/rows.py); runs written before those rows
have none, and their tables simply say nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

COUNT_METRICS = ("n_images", "n_errors")
#: up to this many sets a table lists its counts set by set; beyond it (MNIST-C's 15 corruptions) it gives the range
LISTED_SETS = 4


@dataclass(frozen=True)
class SetCount:
    images: float  # images in the set (mean over the table's methods and seeds: the same for all of them)
    #: method -> misclassified images per seed, mean over its seeds and folds; empty for an OOD set
    errors: dict[str, float] = field(default_factory=dict)


def set_counts(g: pd.DataFrame, sets: list[str]) -> dict[str, SetCount]:
    """The counts of ``sets`` from a group's tidy rows (any metric; only the count rows are read)."""
    out: dict[str, SetCount] = {}
    for name in sets:
        rows = g[g["eval_set"] == name]
        images = rows.loc[rows["metric"] == "n_images", "value"]
        if images.empty:
            continue
        err = rows[rows["metric"] == "n_errors"]
        errors = {str(m): float(v) for m, v in err.groupby("method", sort=False)["value"].mean().items()}
        out[name] = SetCount(float(images.mean()), errors)
    return out


def _n(x: float) -> str:
    return f"{x:,.0f}"


def counts_text(counts: dict[str, SetCount], label=lambda s: s, dash: str = "–") -> str:
    """One sentence for a table's caption, '' without counts. ``label`` shortens a set's name for the text; ``dash``
    joins a range (LaTeX: '--')."""
    if not counts:
        return ""
    labelled = {s: c for s, c in counts.items() if c.errors}
    ood = {s: c for s, c in counts.items() if not c.errors}
    parts = []
    if ood:
        parts.append("OOD images: " + ", ".join(f"{label(s)} {_n(c.images)}" for s, c in ood.items()))
    if labelled and len(labelled) <= LISTED_SETS:
        parts.append(f"misclassified images per seed (mean over seeds; fewest{dash}most over the methods): "
                     + "; ".join(f"{label(s)} {_n(min(c.errors.values()))}{dash}{_n(max(c.errors.values()))} of "
                                 f"{_n(c.images)}" for s, c in labelled.items()))
    elif labelled:
        sizes = sorted({c.images for c in labelled.values()})
        errs = [e for c in labelled.values() for e in c.errors.values()]
        per_set = (f"{_n(sizes[0])} images per set" if len(sizes) == 1
                   else f"{_n(sizes[0])}{dash}{_n(sizes[-1])} images per set")
        parts.append(f"{per_set} ({len(labelled)} sets); misclassified images per seed (mean over seeds): "
                     f"{_n(min(errs))}{dash}{_n(max(errs))} over the sets and methods")
    return "; ".join(parts)
