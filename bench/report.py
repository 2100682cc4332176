"""Aggregation of finished runs into leaderboard tables: mean, std, bootstrap CI, paired tests with Holm correction.

The statistics are pure functions of arrays (``bootstrap_ci``, ``paired_t_test``, ``holm``, ``summarize``) and are
tested by hand-computed cases. ``load_runs`` reads and checks run directories (missing, partial or incompatible
runs are one-line ``UsageError``s); ``build_tables`` turns tidy rows into one ``ReportTable`` per evaluation group
(in-distribution, occlusion, adversarial, OOD near, OOD far, cost), which ``bench.export`` writes as Markdown,
LaTeX, CSV or HTML.

Units of replication are (seed, fold) pairs: each gives one value per (method, eval set, metric). Methods are
paired on these units for the significance test (the same seed and fold share data split and initialisation).
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import json
import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, UsageError
from bench.store import ROW_FIELDS, cell_key

COST_SET = "cost"
EXACT_BOOTSTRAP_MAX = 50_000  # enumerate all n**n resamples when there are at most this many (n <= 6)


# ------------------------------------------------------------------------------------------------- metric facts
@dataclass(frozen=True)
class MetricInfo:
    label: str
    better: int  # +1 higher is better, -1 lower is better, 0 no direction (not bolded, not tested)
    unit: str = "%"
    digits: int = 2


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("Acc", +1),
    "auroc": MetricInfo("AUROC", +1),
    "aupr_error": MetricInfo("AUPR-Err", +1),
    "aupr_success": MetricInfo("AUPR-Succ", +1),
    "fpr95": MetricInfo("FPR95", -1),
    "aurc": MetricInfo("AURC", -1),
    "eaurc": MetricInfo("E-AURC", -1),
    "ece": MetricInfo("ECE", -1),
    "nll": MetricInfo("NLL", -1, "", 3),
    "brier": MetricInfo("Brier", -1, "", 3),
    "mean_confidence": MetricInfo("mean conf", 0, "", 3),
    "ood_auroc": MetricInfo("AUROC", +1),
    "ood_aupr_in": MetricInfo("AUPR-In", +1),
    "ood_aupr_out": MetricInfo("AUPR-Out", +1),
    "ood_fpr95": MetricInfo("FPR95", -1),
    "fooling_rate": MetricInfo("fooling", -1),
    "uap_fooling_rate": MetricInfo("fooling", -1),
    "uap_train_fooling_rate": MetricInfo("train fooling", -1),
    "uap_norm": MetricInfo("UAP norm", 0, "", 3),
    "uap_passes": MetricInfo("UAP passes", 0, "", 0),
    "clean_accuracy": MetricInfo("clean Acc", +1),
    "removed_fraction": MetricInfo("removed", 0),
    "gen_seconds": MetricInfo("gen s", -1, "s", 1),
    "robust_accuracy": MetricInfo("robust Acc", +1),
    "sec_per_epoch": MetricInfo("s/epoch", -1, "s", 2),
    "first_epoch_sec": MetricInfo("1st epoch s", -1, "s", 2),
    "train_sec_total": MetricInfo("train s", -1, "s", 1),
    "peak_cuda_mem_mb": MetricInfo("peak CUDA MiB", -1, "MiB", 0),
    "peak_rss_mb": MetricInfo("peak RSS MiB", -1, "MiB", 0),
    "infer_ms_per_1k": MetricInfo("ms/1k img", -1, "ms", 1),
    "forward_passes": MetricInfo("passes", 0, "", 0),
    "params": MetricInfo("params", 0, "", 0),
    "epochs": MetricInfo("epochs", 0, "", 0),
    "best_epoch": MetricInfo("best epoch", 0, "", 0),
}


def metric_info(metric: str) -> MetricInfo:
    return METRICS.get(metric, MetricInfo(metric, 0, "", 2))


# Evaluation groups, in report order: key -> (title, default metrics).
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "id": ("In-distribution: accuracy, misclassification detection, calibration",
           ("accuracy", "auroc", "aupr_error", "aupr_success", "fpr95", "aurc", "eaurc", "ece", "nll", "brier")),
    "occlusion": ("Occlusion: accuracy and misclassification AUROC", ("accuracy", "auroc")),
    "adversarial": ("Adversarial: accuracy and misclassification AUROC", ("accuracy", "auroc", "uap_fooling_rate")),
    "ood-near": ("Near OOD detection (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "ood-far": ("Far OOD detection (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "ood": ("OOD detection, ungrouped (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "shift": ("Covariate shift (MNIST-C): accuracy, misclassification detection, calibration",
              ("accuracy", "auroc", "aupr_error", "ece")),
    "cost": ("Cost (training on the run's device)",
             ("sec_per_epoch", "first_epoch_sec", "train_sec_total", "peak_cuda_mem_mb", "peak_rss_mb",
              "infer_ms_per_1k", "forward_passes", "params")),
}
OTHER_SHIFT_METRICS = ("accuracy", "auroc")
MEAN_SET = "mean"  # pseudo eval set: per-unit mean over an OOD group's sets


# Shift families (the ``shift`` column written by each eval set) that belong to the occlusion / adversarial groups.
OCCLUSION_SHIFTS = frozenset({"occlusion", "pmnist"})
ADVERSARIAL_SHIFTS = frozenset({"adversarial", "fgsm", "pgd", "fgsm-transfer", "uap", "transfer", "fgsm-eot",
                                "pgd-eot"})
COVARIATE_SHIFTS = frozenset({"mnistc"})  # natural corruptions: the "shift" group, with a mean over its sets


def group_of(shift: str, ood_group: str) -> str:
    """Group key of a result row from its ``shift`` column and (OOD) near/far group."""
    if shift in ("none", ""):
        return "id"
    if shift == "ood":
        return f"ood-{ood_group}" if ood_group in ("near", "far") else "ood"
    if shift in OCCLUSION_SHIFTS:
        return "occlusion"
    if shift in ADVERSARIAL_SHIFTS:
        return "adversarial"
    if shift in COVARIATE_SHIFTS:
        return "shift"
    return shift


# ------------------------------------------------------------------------------------------------ statistics
def summarize(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values; std is nan for n < 2, mean nan for n = 0."""
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size)


def bootstrap_ci(values: Iterable[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. Exact (every one of the n**n equally likely resamples) when
    n**n <= 50,000 (n <= 6), else ``n_boot`` resamples from a generator seeded with ``seed``. Quantiles use the
    inverted empirical CDF (no interpolation). (nan, nan) for fewer than 2 finite values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must lie in (0, 1), got {level}")
    a = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    n = a.size
    if n < 2:
        return float("nan"), float("nan")
    if n ** n <= EXACT_BOOTSTRAP_MAX:
        idx = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    means = a[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def paired_t_test(a: Iterable[float], b: Iterable[float]) -> float:
    """Two-sided p-value of the paired t-test of mean(a - b) = 0 (df = n - 1). Identical pairs give 1; a
    constant non-zero difference (zero variance) gives 0. Needs n >= 2 pairs."""
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"paired_t_test: need at least 2 pairs, got {d.size}")
    if not np.all(np.isfinite(d)):
        raise ValueError("paired_t_test: values contain NaN or inf")
    if np.all(d == 0):
        return 1.0
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0
    t = d.mean() / (sd / math.sqrt(d.size))
    return float(min(1.0, 2.0 * student_t.sf(abs(t), d.size - 1)))


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order: sorted ascending, p_(i) * (m - i + 1) (i from 1),
    made monotone by a running maximum and capped at 1."""
    p = np.asarray(list(pvalues), dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return [float(x) for x in out]


@dataclass(frozen=True)
class Verdict:
    best: bool  # best mean in the column (ties: all of them)
    tied: bool  # not significantly different from the best (Holm-adjusted p >= alpha)
    p_holm: float | None  # adjusted p-value of the comparison with the best; None when not tested


def compare_to_best(units: dict[str, dict[Any, float]], better: int, alpha: float = 0.05) -> dict[str, Verdict]:
    """For one column: ``units[method][unit] = value``. The best method has the best mean; every other method
    is compared with it by a paired t-test on their common units (at least 2), Holm-corrected over the
    methods tested. ``better`` 0 (no direction) marks nothing."""
    means = {m: summarize(v.values())[0] for m, v in units.items()}
    finite = {m: x for m, x in means.items() if np.isfinite(x)}
    if better == 0 or not finite:
        return {m: Verdict(False, False, None) for m in units}
    top = max(better * x for x in finite.values())
    bests = [m for m, x in finite.items() if better * x >= top - 1e-12 * max(1.0, abs(top))]
    ref = units[bests[0]]
    tested: list[str] = []
    raw: list[float] = []
    for m, vals in units.items():
        if m in bests:
            continue
        common = [u for u in vals if u in ref and np.isfinite(vals[u]) and np.isfinite(ref[u])]
        if len(common) >= 2:
            tested.append(m)
            raw.append(paired_t_test([ref[u] for u in common], [vals[u] for u in common]))
    adjusted = dict(zip(tested, holm(raw)))
    return {m: Verdict(m in bests, m in adjusted and adjusted[m] >= alpha, adjusted.get(m)) for m in units}


# ------------------------------------------------------------------------------------------------ loading runs
@dataclass
class RunSet:
    rows: pd.DataFrame  # tidy rows of every run, ROW_FIELDS plus ``group`` (near/far for OOD sets)
    manifests: dict[str, dict[str, Any]]  # run_id -> manifest
    dirs: dict[str, Path]  # run_id -> directory
    ood_groups: dict[str, str] = field(default_factory=dict)  # eval set -> near | far | ""

    def prediction(self, run_id: str, method: str, seed: int, fold: int, eval_set: str) -> Path:
        return self.dirs[run_id] / "predictions" / f"{cell_key(method, seed, fold, eval_set)}.npz"

    @property
    def device_names(self) -> list[str]:
        return sorted({str(m.get("device_name", "unknown")) for m in self.manifests.values()})


# Config keys that must agree between runs combined in one report (methods, seeds and eval sets may differ).
_FREE_KEYS = ("methods", "seeds", "datasets", "ood", "method_options", "device", "data_dir", "cache_dir")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{path} is corrupt (not JSON); {what}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def _expand(kind: str, names: list[str]) -> list[str] | None:
    """Registry expansion of a manifest's method / eval-set names; None when the registry no longer knows one."""
    try:
        if kind == "methods":
            from bench.methods import METHODS

            return METHODS.expand(list(names))
        from bench.datasets import evalsets

        return evalsets.expand(list(names)) if names else evalsets.offline_sets()
    except (BenchError, KeyError, ValueError):
        return None


def _expected_cells(manifest: dict[str, Any], rows: pd.DataFrame) -> set[tuple[str, int, int, str]]:
    if manifest.get("cells"):  # runs that list their cells (bench.evaluate: methods labelled by model; bench score)
        return {(str(m), int(s), int(f), str(ds)) for m, s, f, ds in manifest["cells"]}
    cfg = manifest.get("config", {})
    methods = list(cfg.get("methods", []))
    if not methods or any(c in "".join(methods) for c in "*?["):  # the registry is imported only when needed
        methods = _expand("methods", methods) or sorted(rows["method"].unique())
    listed = list(manifest.get("eval_set_groups") or cfg.get("datasets") or [])
    if not listed or not set(listed) <= set(rows["eval_set"]):  # families and wildcards need the registry
        listed = (_expand("datasets", listed) if listed else None) or sorted(set(rows["eval_set"]) - {COST_SET})
    sets = listed
    seeds = list(cfg.get("seeds", sorted(rows["seed"].unique())))
    folds = range(int(cfg.get("folds", 1)))
    return {(m, int(s), f, ds) for m in methods for s in seeds for f in folds for ds in [*sets, COST_SET]}


def load_run(path: str | Path, allow_partial: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and manifest of one finished run directory; one-line UsageError when it is missing or partial."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"run directory {p} does not exist")
    if not (p / "manifest.json").is_file():
        raise UsageError(f"{p} is not a run directory (no manifest.json); give a directory made by `bench run`")
    manifest = _read_json(p / "manifest.json", "start a new run")
    cells = sorted((p / "cells").glob("*.json")) if (p / "cells").is_dir() else []
    if not cells:
        raise UsageError(f"{p} has no finished cells; run it first (python -m bench run ... --out {p})")
    rows: list[dict[str, Any]] = []
    for c in cells:
        data = _read_json(c, f"delete it and finish the run with --resume --out {p}")
        if not isinstance(data, list):
            raise UsageError(f"{c} is malformed (expected a list of rows)")
        for r in data:
            missing = [f for f in ROW_FIELDS if not isinstance(r, dict) or f not in r]
            if missing:
                raise UsageError(f"{c} is malformed (a row lacks {missing[0]!r}); it was not written by this bench")
        rows.extend(data)
    df = pd.DataFrame(rows, columns=list(ROW_FIELDS))
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["seed"] = df["seed"].astype(int)
    df["fold"] = df["fold"].astype(int)
    df["severity"] = df["severity"].fillna("").astype(str)
    df["run_id"] = p.name
    if not allow_partial:
        done = set(zip(df["method"], df["seed"], df["fold"], df["eval_set"]))
        missing_cells = sorted(_expected_cells(manifest, df) - done)
        if missing_cells:
            m, s, f, ds = missing_cells[0]
            expected = len(_expected_cells(manifest, df))
            why = " (see errors.json)" if (p / "errors.json").exists() else ""
            raise UsageError(f"{p} is partial: {len(missing_cells)} of {expected} cells missing{why}, e.g. {m} "
                             f"seed {s} fold {f} {ds}; finish it with `python -m bench run --resume --out {shlex.quote(str(p))}` or pass "
                             "--allow-partial")
    return df, manifest


def _ood_group(name: str, manifest: dict[str, Any]) -> str:
    """near | far | '' for an OOD set: from the manifest when the runner recorded it, else from the registry
    (building the set with one image, offline); '' when neither knows."""
    info = (manifest.get("eval_set_groups") or {}).get(name)
    if isinstance(info, dict) and info.get("group"):
        return str(info["group"])
    try:
        from bench.datasets import evalsets

        if evalsets.needs_model(name):
            return ""
        ctx = evalsets.EvalContext(data_dir=Path(manifest.get("config", {}).get("data_dir", "data")), max_eval=1,
                                   allow_download=False)
        return evalsets.build(name, ctx).group
    except (BenchError, KeyError, ValueError, OSError):
        return ""


def load_runs(paths: list[str | Path], allow_partial: bool = False) -> RunSet:
    """Several runs combined: they must agree on everything that shapes results (backbone, recipe, split, eval
    settings, folds, profile) and may differ in methods, seeds and eval sets; no cell may appear twice."""
    if not paths:
        raise UsageError("give at least one run directory")
    frames: list[pd.DataFrame] = []
    manifests: dict[str, dict[str, Any]] = {}
    dirs: dict[str, Path] = {}
    for path in paths:
        df, manifest = load_run(path, allow_partial)
        rid = Path(path).name
        if rid in manifests:
            raise UsageError(f"run {rid} is given twice ({dirs[rid]} and {path}); each run once")
        manifests[rid], dirs[rid] = manifest, Path(path)
        frames.append(df)
    first = next(iter(manifests))
    # rows of user models (bench.evaluate) carry the model in their method label, so the backbone may differ
    free = _FREE_KEYS + (("backbone",) if any(m.get("user_models") for m in manifests.values()) else ())
    base_cfg = {k: v for k, v in manifests[first].get("config", {}).items() if k not in free}
    for rid, m in manifests.items():
        cfg = {k: v for k, v in m.get("config", {}).items() if k not in free}
        for key in sorted(set(base_cfg) | set(cfg)):
            if base_cfg.get(key) != cfg.get(key):
                raise UsageError(f"runs {first} and {rid} are incompatible: {key} differs ({base_cfg.get(key)!r} vs "
                                 f"{cfg.get(key)!r}); report them separately")
    options: dict[str, tuple[str, Any]] = {}
    for rid, m in manifests.items():
        for meth, opts in (m.get("config", {}).get("method_options") or {}).items():
            if meth in options and options[meth][1] != opts:
                raise UsageError(f"runs {options[meth][0]} and {rid} are incompatible: {meth} options differ "
                                 f"({options[meth][1]} vs {opts}); report them separately")
            options.setdefault(meth, (rid, opts))
    rows = pd.concat(frames, ignore_index=True)
    dup = rows.duplicated(["method", "seed", "fold", "eval_set", "metric"], keep=False)
    if dup.any():
        r = rows[dup].iloc[0]
        owners = sorted(rows[dup & (rows["method"] == r["method"]) & (rows["seed"] == r["seed"])]["run_id"].unique())
        raise UsageError(f"{r['method']} seed {r['seed']} fold {r['fold']} {r['eval_set']} appears in more than one "
                         f"run ({', '.join(owners)}); give each cell once")
    groups = {}
    for name in rows.loc[rows["shift"] == "ood", "eval_set"].unique():
        rid = rows.loc[rows["eval_set"] == name, "run_id"].iloc[0]
        groups[name] = _ood_group(name, manifests[rid])
    rows["group"] = [groups.get(e, "") for e in rows["eval_set"]]
    return RunSet(rows, manifests, dirs, groups)


# ------------------------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Column:
    eval_set: str
    metric: str
    set_label: str  # eval set shown above the metric ('' when the group has a single set)
    label: str
    better: int
    unit: str
    digits: int


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    best: bool = False
    tied: bool = False
    p_holm: float | None = None


@dataclass
class ReportTable:
    key: str  # group key (id, occlusion, adversarial, ood-near, ood-far, ood, cost, or another shift)
    title: str
    methods: list[str]
    columns: list[Column]
    cells: dict[tuple[str, int], Cell]  # (method, column index) -> cell
    units: int  # most (seed, fold) units behind one cell
    ci: bool = False
    alpha: float = 0.05
    part: str = ""  # which slice of the group this table holds when a layout splits it (bench.layout)

    def caption(self, mark: str = "marked") -> str:
        """What the table shows and how to read it; ``mark`` names how a writer marks ties with the best."""
        return caption(self.key, self.units, self.ci, self.alpha, self.columns, mark)


def select(names: list[str], available: list[str], what: str) -> list[str]:
    """Names or wildcards, in the given order, each matching something in ``available``."""
    out: list[str] = []
    for pat in names:
        hits = fnmatch.filter(available, pat) if any(c in pat for c in "*?[") else [pat] if pat in available else []
        if not hits:
            close = difflib.get_close_matches(pat, available, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (present: {', '.join(sorted(available))})"
            raise UsageError(f"unknown {what} {pat!r}: not in these runs{hint}")
        out.extend(h for h in hits if h not in out)
    return out


def _set_order(eval_sets: list[str], rows: pd.DataFrame) -> list[str]:
    """Eval sets ordered by family, then numeric severity, then name."""
    def key(name: str) -> tuple[str, float, str]:
        sev = rows.loc[rows["eval_set"] == name, "severity"].iloc[0]
        return name.split(":")[0], severity_value(sev), name

    return sorted(eval_sets, key=key)


def severity_value(severity: Any) -> float:
    """The last number in a severity string ('eps=0.1' -> 0.1, '0.25' -> 0.25, UAP 'inf:0.2' -> 0.2, the
    radius); nan when there is none (named variants such as PMNIST cuts)."""
    import re

    found = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", str(severity))
    return float(found[-1]) if found else float("nan")


def short_set(name: str) -> str:
    return name.removeprefix("ood:")


def build_tables(runs: RunSet, metrics: list[str] | None = None, methods: list[str] | None = None,
                 ci: bool = False, alpha: float = 0.05, groups: list[str] | None = None) -> list[ReportTable]:
    """One table per evaluation group present in the rows. ``metrics`` (names or wildcards) replaces each
    group's default columns; ``methods`` filters and orders the rows; ``groups`` (names or wildcards: id,
    occlusion, adversarial, ood-near, ood-far, ood, cost, or another shift family) keeps only those tables.
    Unknown names raise UsageError."""
    rows = runs.rows
    all_methods = list(dict.fromkeys(rows["method"]))
    method_list = select(methods, all_methods, "method") if methods else all_methods
    chosen = select(metrics, sorted(rows["metric"].unique()), "metric") if metrics else None
    rows = rows[rows["method"].isin(method_list)].copy()
    rows["gkey"] = [group_of(s, g) for s, g in zip(rows["shift"], rows["group"])]
    order = list(GROUPS) + sorted(set(rows["gkey"]) - set(GROUPS))
    order.remove("cost")
    order.append("cost")
    if groups:
        present = [k for k in order if (rows["gkey"] == k).any()]
        keep = set(select(groups, present, "group"))
        order = [k for k in order if k in keep]
    tables = []
    for gkey in order:
        g = rows[rows["gkey"] == gkey]
        if g.empty:
            continue
        title, defaults = GROUPS.get(gkey, (f"{gkey.capitalize()} shift: accuracy and misclassification AUROC",
                                            OTHER_SHIFT_METRICS))
        wanted = [m for m in (chosen if chosen is not None else defaults) if m in set(g["metric"])]
        if not wanted:
            continue
        g = g[g["metric"].isin(wanted)]
        sets = _set_order(list(g["eval_set"].unique()), g)
        if (gkey.startswith("ood") or gkey == "shift") and len(sets) > 1:
            g = pd.concat([g, _group_mean(g)], ignore_index=True)
            sets = [*sets, MEAN_SET]
        tables.append(_table(gkey, title, g, sets, wanted, method_list, ci, alpha))
    if not tables:
        raise UsageError("nothing to report: no selected metric occurs for the selected methods")
    return tables


def _group_mean(g: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed, fold, metric) mean over the group's eval sets (only units that have every set)."""
    n_sets = g["eval_set"].nunique()
    keys = ["method", "seed", "fold", "metric"]
    agg = g.groupby(keys, sort=False)["value"].agg(["mean", "count"]).reset_index()
    agg = agg[agg["count"] == n_sets]
    return agg.rename(columns={"mean": "value"}).drop(columns="count").assign(eval_set=MEAN_SET)


def _table(gkey: str, title: str, g: pd.DataFrame, sets: list[str], wanted: list[str], method_list: list[str],
           ci: bool, alpha: float) -> ReportTable:
    columns: list[Column] = []
    for ds in sets:
        for met in wanted:
            if not ((g["eval_set"] == ds) & (g["metric"] == met)).any():
                continue
            info = metric_info(met)
            set_label = "" if len(sets) == 1 else ("mean" if ds == MEAN_SET else short_set(ds))
            columns.append(Column(ds, met, set_label, info.label, info.better, info.unit, info.digits))
    present = [m for m in method_list if m in set(g["method"])]
    values: dict[tuple[str, str], dict[str, dict[tuple[int, int], float]]] = {}
    for r in g.itertuples(index=False):
        values.setdefault((r.eval_set, r.metric), {}).setdefault(r.method, {})[(r.seed, r.fold)] = r.value
    cells: dict[tuple[str, int], Cell] = {}
    units = 0
    for j, col in enumerate(columns):
        per_method = values.get((col.eval_set, col.metric), {})
        verdicts = compare_to_best(per_method, col.better, alpha)
        for m, vals in per_method.items():
            mean, std, n = summarize(vals.values())
            lo, hi = bootstrap_ci(list(vals.values())) if ci else (float("nan"), float("nan"))
            v = verdicts[m]
            cells[(m, j)] = Cell(mean, std, n, lo, hi, v.best, v.tied, v.p_holm)
            units = max(units, n)
    return ReportTable(gkey, title, present, columns, cells, units, ci, alpha)


def caption(gkey: str, units: int, ci: bool, alpha: float, columns: list[Column], mark: str = "marked") -> str:
    spread = (f"mean ± std over {units} seeds/folds" if units > 1 else "a single seed (no spread, no test)")
    parts = [spread]
    if ci and units > 1:
        parts.append("[95% percentile-bootstrap CI of the mean]")
    pct = [c.label for c in columns if c.unit == "%"]
    raw = sorted({c.label for c in columns if c.unit == ""})
    if pct:
        parts.append("values in %" + (f" except {', '.join(raw)}" if raw and gkey != "cost" else ""))
    if gkey == "cost":
        parts.append("s = seconds, MiB = 2^20 bytes; peak RSS is the whole process's (CPU runs); the first epoch "
                     "is reported apart from the mean epoch time")
    if gkey.startswith("ood"):
        parts.append("positives = in-distribution test images (OpenOOD counts OOD as positive)")
    if any(c.eval_set == MEAN_SET for c in columns):
        parts.append("mean = average over the group's sets per seed")
    parts.append("↑ higher is better, ↓ lower is better; best mean per column in bold")
    if units > 1:
        parts.append(f"{mark}: not significantly different from the best (two-sided paired t-test across seeds, "
                     f"Holm-corrected over the methods in the column, α = {alpha:g})")
    return "; ".join(parts) + "."
