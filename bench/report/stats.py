"""Statistics of a report, as pure functions of arrays, each tested by hand-computed cases (tests/test_report.py).

Units of replication are (seed, fold) pairs: each gives one value per (method, eval set, metric). Methods are paired
on these units for the significance test (the same seed and fold share data split and initialisation).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_BOOTSTRAP_MAX = 50_000  # enumerate all n**n resamples when there are at most this many (n <= 6)


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
