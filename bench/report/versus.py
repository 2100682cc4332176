"""``bench report RUN --versus msp``: each method's AUROC minus the baseline's, tested on the images (paired.py).

For every method that shares the baseline's network (``Training.SHARED_BASELINE``: post-hoc scorers, MC-dropout,
temperature) and every (seed, fold) both have, the per-sample predictions of the run (``predictions/<cell>.npz``)
give one paired difference per seed: misclassification AUROC on the in-distribution set (DeLong, or the paired
bootstrap when the two methods are right on different images) and OOD AUROC per OOD set (DeLong). The seeds are
pooled by ``paired.combine`` and the p-values of one column are Holm-corrected over the methods. Methods that train
or read a network of their own are listed as not compared: a per-image test would ignore their training noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.errors import UsageError
from bench.report.paired import Paired, combine, misclassification_difference, ood_difference
from bench.report.runs import RunSet
from bench.report.stats import holm
from bench.run.store import read_predictions


@dataclass(frozen=True)
class VersusRow:
    method: str
    result: Paired  # pooled over seeds
    p_holm: float
    seeds: int


@dataclass
class VersusTable:
    eval_set: str
    kind: str  # 'id' (misclassification AUROC) or 'ood' (OOD AUROC)
    rows: list[VersusRow]
    images: int  # images of the set per seed: ID test images (kind id), OOD images (kind ood)
    errors: float  # the baseline's errors on the ID test set, mean over the seeds compared
    id_images: int  # in-distribution images per seed (the OOD AUROC's positives)


@dataclass
class Versus:
    baseline: str
    tables: list[VersusTable]
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it is not compared
    n_boot: int = 2000
    alpha: float = 0.05


def _load(runs: RunSet, method: str, seed: int, fold: int, eval_set: str) -> dict[str, np.ndarray]:
    rid = runs.rows.loc[(runs.rows["method"] == method) & (runs.rows["seed"] == seed) & (runs.rows["fold"] == fold)
                        & (runs.rows["eval_set"] == eval_set), "run_id"].iloc[0]
    path = runs.prediction(rid, method, seed, fold, eval_set)
    if not path.is_file():
        raise UsageError(f"--versus needs per-sample predictions, and {path} is missing; re-run the cell with "
                         "`bench run --resume` or report without --versus")
    return read_predictions(path, ("probs", "confidence", "labels"))


def _training(method: str) -> str | None:
    """How the registry says the method gets its network (methods.base.Training value); None when it does not
    know the method (a user's model)."""
    from bench.methods import METHODS

    return METHODS.get(method).training.value if method in METHODS else None


# why a method is not compared, by its Training value (anything but the shared baseline)
NOT_SHARED = {"own": "trains a network of its own",
              "frozen-baseline": "trains a part of its own (head, members) on the frozen baseline",
              None: "unknown to the registry, so not known to score the baseline's network"}


def _same_images(a: dict[str, np.ndarray], b: dict[str, np.ndarray], where: str) -> None:
    if not np.array_equal(a["labels"], b["labels"]):
        raise UsageError(f"--versus: {where}: the two methods' labels differ (not the same images in the same order); "
                         "they cannot be compared image by image")


def versus(runs: RunSet, baseline: str, methods: list[str], n_boot: int = 2000, seed: int = 0,
           alpha: float = 0.05, columns: set[tuple[str, str]] | None = None) -> Versus:
    """Paired comparison of each method in ``methods`` with ``baseline`` on the runs' per-sample predictions.
    ``columns``: the (eval set, metric) pairs the report shows; only those AUROC columns are compared (None: all)."""
    rows = runs.rows
    if baseline not in set(rows["method"]):
        raise UsageError(f"--versus {baseline}: the baseline is not in these runs")
    if _training(baseline) != "shared-baseline":
        raise UsageError(f"--versus {baseline}: the baseline must score the run's shared baseline network (e.g. msp)")
    id_sets = sorted(rows.loc[rows["shift"].isin(["none", ""]), "eval_set"].unique())
    if len(id_sets) != 1:
        raise UsageError(f"--versus: need exactly one in-distribution test set, found {id_sets or 'none'}")
    id_set = id_sets[0]
    ood_sets = sorted(rows.loc[rows["shift"] == "ood", "eval_set"].unique())
    out = Versus(baseline, [], {}, n_boot, alpha)
    compared: list[str] = []
    for m in methods:
        if m == baseline:
            continue
        how = _training(m)
        if how != "shared-baseline":
            out.skipped[m] = NOT_SHARED.get(how, f"training {how!r}") + "; compare it across seeds (the † marks)"
            continue
        compared.append(m)
    if not compared:
        why = "; ".join(f"{m}: {r.split(';')[0]}" for m, r in out.skipped.items()) or "it is the only method"
        raise UsageError(f"--versus {baseline}: no other method of the report scores {baseline}'s network ({why}), "
                         "so there is nothing to compare image by image; leave --versus out")

    def units(m: str, ds: str) -> list[tuple[int, int]]:
        mine = rows[(rows["method"] == m) & (rows["eval_set"] == ds)]
        return sorted(set(zip(mine["seed"], mine["fold"])))

    def backbone(m: str, s: int, f: int) -> set[str]:
        r = rows[(rows["method"] == m) & (rows["seed"] == s) & (rows["fold"] == f)]
        return set(r["backbone"])

    for ds in [id_set, *ood_sets]:
        kind = "id" if ds == id_set else "ood"
        if columns is not None and (ds, "auroc" if kind == "id" else "ood_auroc") not in columns:
            continue  # left out of the report by --groups / --metrics
        results: list[tuple[str, Paired, int]] = []
        images, id_images, errors = 0, 0, {}
        for m in compared:
            common = sorted(set(units(m, ds)) & set(units(baseline, ds)) & set(units(m, id_set))
                            & set(units(baseline, id_set)))
            per_seed = []
            for s, f in common:
                if backbone(m, s, f) != backbone(baseline, s, f):
                    raise UsageError(f"--versus: {m} and {baseline} seed {s} fold {f} ran on different backbones")
                where = f"{m} vs {baseline} seed {s} fold {f} {ds}"
                a_id, b_id = _load(runs, m, s, f, id_set), _load(runs, baseline, s, f, id_set)
                _same_images(a_id, b_id, where)
                try:
                    if kind == "id":
                        y = a_id["labels"]
                        right_a = a_id["probs"].argmax(axis=1) == y
                        right_b = b_id["probs"].argmax(axis=1) == y
                        # each (method, seed, set) gets its own bootstrap stream, reproducible from --seed alone
                        per_seed.append(misclassification_difference(
                            a_id["confidence"], right_a, b_id["confidence"], right_b, n_boot,
                            seed=hash_seed(seed, m, s, f, ds)))
                        images = y.size
                    else:
                        a_ood, b_ood = _load(runs, m, s, f, ds), _load(runs, baseline, s, f, ds)
                        _same_images(a_ood, b_ood, where)
                        per_seed.append(ood_difference(a_id["confidence"], a_ood["confidence"],
                                                       b_id["confidence"], b_ood["confidence"]))
                        images = a_ood["labels"].size
                except ValueError as e:  # e.g. a set without errors: the AUROC itself is undefined
                    raise UsageError(f"--versus: {where}: {e}") from None
                errors[(s, f)] = int((b_id["probs"].argmax(axis=1) != b_id["labels"]).sum())
                id_images = b_id["labels"].size
            if per_seed:
                results.append((m, combine(per_seed), len(per_seed)))
        adjusted = holm([r.p for _, r, _ in results])
        table = VersusTable(ds, kind, [VersusRow(m, r, p, k) for (m, r, k), p in zip(results, adjusted)], images,
                            float(np.mean(list(errors.values()))) if errors else float("nan"), id_images)
        if table.rows:
            out.tables.append(table)
    return out


def hash_seed(seed: int, *parts: object) -> int:
    """A stable seed per comparison (Python's hash() of strings changes between processes)."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % 2**32


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def to_markdown(v: Versus) -> str:
    """The comparison tables in Markdown, one per column compared, with a caption saying how to read them."""
    out = []
    for t in v.tables:
        if t.kind == "id":
            title = f"Versus {v.baseline}: misclassification AUROC on {t.eval_set}"
            count = f"{t.images:,} images per seed, {t.errors:,.1f} errors of {v.baseline} per seed (mean)"
        else:
            title = f"Versus {v.baseline}: OOD AUROC, {t.eval_set.removeprefix('ood:')}"
            count = f"{t.id_images:,} in-distribution and {t.images:,} OOD images per seed"
        out.append(f"### {title}\n")
        out.append("| method | ΔAUROC (pp) | 95% CI | p | p (Holm) | test | seeds |")
        out.append("|:--|--:|:--|--:|--:|:--|--:|")
        for r in t.rows:
            ci = f"[{_fmt(r.result.ci_low)}, {_fmt(r.result.ci_high)}]"
            d = _fmt(r.result.diff)
            d = f"**{d}**" if r.p_holm < v.alpha else d
            out.append(f"| {r.method} | {d} | {ci} | {_p(r.result.p)} | {_p(r.p_holm)} | {r.result.test} | {r.seeds} |")
        out.append("")
        out.append(f"*{count}. Δ = method − {v.baseline}, mean over seeds of the per-seed AUROC differences on "
                   "the same images; CI and p from z = Σ Δ_seed / √(Σ SE_seed²) (DeLong per seed, or a paired "
                   f"bootstrap of {v.n_boot:,} image resamples where the two methods err on different images); "
                   f"p-values Holm-corrected over the methods of the table; bold: Holm p < {v.alpha:g}. Conditional "
                   "on the trained networks: seed-to-seed training noise is not in the interval "
                   "(docs/statistics.md).*\n")
    if v.skipped:
        out.append(f"Not compared with {v.baseline}: " + "; ".join(f"{m}: {why}" for m, why in v.skipped.items())
                   + ".\n")
    return "\n".join(out)
