"""Per-image paired comparisons of two confidence methods scored on the same images, as pure functions of arrays.

The seed-level t-test of bench/report/stats.py has 2 degrees of freedom with 3 seeds; a one-point AUROC difference is
invisible to it. When two methods score the *same* test images (post-hoc scorers on one network: same seed, same
eval set, same order), the images themselves are the unit of replication:

* ``delong``: DeLong, DeLong & Clarke-Pearson (Biometrics 1988) variance of the difference of two correlated
  AUROCs on one label vector, computed with the midrank algorithm of Sun & Xu (IEEE SPL 2014), O(n log n).
* ``paired_bootstrap``: resample image indices jointly for both methods (within strata, e.g. ID and OOD images),
  for any metric, and for misclassification AUROCs whose correctness labels differ between the methods.
* ``combine``: the per-seed differences pooled into one test (see its docstring for the choice and the source).

Differences are in percentage points (AUROC in percent, as bench/metrics.py). docs/statistics.md has the whole
procedure; tests/test_paired.py checks each function on hand-computed, brute-force and simulated cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["Paired", "delong", "paired_bootstrap", "metric_difference", "bootstrap_auroc_difference",
           "misclassification_difference",
           "ood_difference", "combine", "z_test"]


@dataclass(frozen=True)
class Paired:
    """metric(a) - metric(b) with its standard error and the two-sided z-test of "no difference"."""

    diff: float  # percentage points
    se: float
    z: float
    p: float
    ci_low: float  # 95% (or ``level``) interval of diff
    ci_high: float
    test: str  # 'delong' or 'bootstrap'; after ``combine``, the tests of its seeds joined by '+'
    n_pos: int = 0  # positives (correct / ID images); summed over seeds by ``combine``
    n_neg: int = 0  # negatives (errors / OOD images)


def z_test(diff: float, se: float) -> tuple[float, float]:
    """(z, two-sided normal p). A zero standard error gives p = 1 for a zero difference and p = 0 otherwise (the
    two score vectors order every pair identically, or differ with no sampling noise at all)."""
    if not (np.isfinite(diff) and np.isfinite(se)) or se < 0:
        return float("nan"), float("nan")
    if se == 0:
        return (0.0, 1.0) if diff == 0 else (float(np.copysign(np.inf, diff)), 0.0)
    z = diff / se
    return float(z), float(min(1.0, 2.0 * norm.sf(abs(z))))


def _normal(diff: float, se: float, test: str, level: float, n_pos: int, n_neg: int) -> Paired:
    z, p = z_test(diff, se)
    h = norm.ppf(0.5 + level / 2.0) * se
    return Paired(float(diff), float(se), z, p, float(diff - h), float(diff + h), test, n_pos, n_neg)


def _check(scores: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name}: length {a.size} does not match {n}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _positives(positives, n: int, name: str = "positives") -> np.ndarray:
    a = np.asarray(positives)
    if a.ndim != 1 or a.size != n or not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name}: expected {n} values of 0/1 or bool")
    return a.astype(bool)


def delong(scores_a, scores_b, positives, level: float = 0.95) -> Paired:
    """DeLong's test of AUROC(a) = AUROC(b) on one set of images with one label vector (``positives``).

    Structural components (DeLong et al. 1988): for a positive x_i, V10_i = mean over negatives of psi(x_i, y_j);
    for a negative y_j, V01_j = mean over positives of psi(x_i, y_j), psi = 1 if x > y, 1/2 if tied, 0 otherwise.
    Var(AUC_a - AUC_b) = c' (S10 / m + S01 / n) c with c = (1, -1), S10 and S01 the sample covariances (ddof 1) of
    the two methods' components over the m positives and the n negatives. Sun & Xu (2014) get every component from
    three midrank vectors, so the whole test costs three sorts per method.
    """
    a = _check(scores_a, "scores_a")
    b = _check(scores_b, "scores_b", a.size)
    pos = _positives(positives, a.size)
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong: need at least 2 positives and 2 negatives, got {m} and {n}")
    v10, v01, auc = [], [], []
    for s in (a, b):
        x, y = s[pos], s[~pos]
        tz = rankdata(np.concatenate([x, y]))  # midranks in the pooled sample
        tx, ty = rankdata(x), rankdata(y)  # midranks within each class
        auc.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v10.append((tz[:m] - tx) / n)  # how many negatives each positive beats (ties 1/2), as a fraction
        v01.append(1.0 - (tz[m:] - ty) / m)  # how many positives beat each negative
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    se = float(np.sqrt(max(var, 0.0)))  # rounding can make a zero variance slightly negative
    return _normal(100.0 * (auc[0] - auc[1]), 100.0 * se, "delong", level, m, n)


def _resample(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) image indices, each stratum resampled with replacement within itself, strata kept in place."""
    idx = np.empty((n_boot, strata.size), dtype=np.int64)
    for g in np.unique(strata):
        members = np.flatnonzero(strata == g)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return idx


def paired_bootstrap(stat: Callable[[np.ndarray], np.ndarray], strata, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95, chunk: int = 200, n_pos: int = 0, n_neg: int = 0) -> Paired:
    """Paired bootstrap of a difference of two methods' metric on the same images.

    ``stat(idx)`` takes a (k, n) array of image indices (row 0 of the first call is the identity, the observed
    sample) and returns the k differences metric(a[idx_r]) - metric(b[idx_r]): both methods see the same resampled
    images, which keeps the pairing. ``strata`` (length n) labels groups resampled apart with their sizes fixed
    (ID vs OOD images; one label for misclassification). Resamples are drawn from ``default_rng(seed)`` in chunks
    of ``chunk`` (memory: chunk x n indices). The standard error is the std (ddof 1) of the ``n_boot`` resampled
    differences, the p-value the normal z-test of diff / se (the form of DeLong's test, so the seeds combine the
    same way), the interval the percentile interval (Efron & Tibshirani 1993, ch. 13). A resample where the
    metric is undefined (e.g. no error drawn) raises: the sample is then too small for this test.
    """
    if n_boot < 2:
        raise ValueError(f"n_boot: need at least 2 resamples, got {n_boot}")
    g = np.asarray(strata)
    if g.ndim != 1 or g.size == 0:
        raise ValueError("strata: expected a non-empty 1-D array")
    observed = float(np.asarray(stat(np.arange(g.size)[None, :]), dtype=np.float64)[0])
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, chunk):
        d = np.asarray(stat(_resample(g, min(chunk, n_boot - start), rng)), dtype=np.float64)
        if not np.all(np.isfinite(d)):
            raise ValueError("paired_bootstrap: the metric is undefined on a resample (too few positives or "
                             "negatives); use more images")
        diffs.append(d)
    boot = np.concatenate(diffs)
    se = float(boot.std(ddof=1))
    z, p = z_test(observed, se)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return Paired(observed, se, z, p, float(lo), float(hi), "bootstrap", n_pos, n_neg)


def metric_difference(metric: Callable[..., float], arrays_a: tuple, arrays_b: tuple, strata=None,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Paired:
    """metric(*arrays_a) - metric(*arrays_b) by the paired bootstrap, for any metric of per-image arrays (e.g.
    ``bench.metrics.fpr_at_tpr(confidence, correct)``, ``ece(probs, labels)``): every array is indexed by the same
    resampled images. One Python call per resample and method, so slower than the AUROC path; same draws as
    ``bootstrap_auroc_difference`` for the same ``strata`` and ``seed``."""
    a = [np.asarray(x) for x in arrays_a]
    b = [np.asarray(x) for x in arrays_b]
    n = len(a[0])
    if any(len(x) != n for x in a + b):
        raise ValueError(f"metric_difference: every array needs the same length (images), got "
                         f"{[len(x) for x in a + b]}")
    g = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)

    def stat(idx: np.ndarray) -> np.ndarray:
        return np.array([metric(*(x[r] for x in a)) - metric(*(x[r] for x in b)) for r in idx])

    return paired_bootstrap(stat, g, n_boot, seed, level)


class _AurocOnResamples:
    """AUROC (percent) of one score vector on many resamples without sorting each one: a resample is a vector of
    counts (how often each image was drawn), and the Mann-Whitney statistic is a weighted sum over tie groups of
    the sorted scores, so one sort serves every resample (O(n) per resample instead of O(n log n))."""

    def __init__(self, scores: np.ndarray, pos: np.ndarray):
        self.order = np.argsort(scores, kind="stable")
        s = scores[self.order]
        self.starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # first index of each group of tied scores
        self.pos = pos[self.order]

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        w = counts[:, self.order]
        wp = np.add.reduceat(w * self.pos, self.starts, axis=1)  # drawn positives per tie group
        wn = np.add.reduceat(w * ~self.pos, self.starts, axis=1)
        below = np.cumsum(wn, axis=1) - wn  # drawn negatives scored strictly lower than the group
        m, n = wp.sum(axis=1), wn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * (wp * (below + 0.5 * wn)).sum(axis=1) / (m * n)  # a tied pair counts 1/2


def _counts(idx: np.ndarray) -> np.ndarray:
    """(k, n) resampled indices -> (k, n) draw counts of each image."""
    k, n = idx.shape
    flat = (idx + n * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)


def bootstrap_auroc_difference(scores_a, pos_a, scores_b, pos_b, strata=None, n_boot: int = 2000, seed: int = 0,
                               level: float = 0.95) -> Paired:
    """AUROC(scores_a, pos_a) - AUROC(scores_b, pos_b) by the paired bootstrap; each method has its own label
    vector (misclassification: each is right on its own images). ``strata`` defaults to one group."""
    a = _check(scores_a, "scores_a")
    b = _check(scores_b, "scores_b", a.size)
    pa, pb = _positives(pos_a, a.size, "pos_a"), _positives(pos_b, a.size, "pos_b")
    g = np.zeros(a.size, dtype=np.int64) if strata is None else np.asarray(strata)
    auc_a, auc_b = _AurocOnResamples(a, pa), _AurocOnResamples(b, pb)

    def stat(idx: np.ndarray) -> np.ndarray:
        c = _counts(idx)  # the same draws for both methods: the pairing
        return auc_a(c) - auc_b(c)

    return paired_bootstrap(stat, g, n_boot, seed, level, n_pos=int(pb.sum()), n_neg=int((~pb).sum()))


def misclassification_difference(conf_a, correct_a, conf_b, correct_b, n_boot: int = 2000, seed: int = 0,
                                 level: float = 0.95) -> Paired:
    """Misclassification AUROC (positives = correct predictions) of method a minus method b on the same images.
    DeLong when both methods are right on exactly the same images (one label vector), else the paired bootstrap
    (the two AUROCs are on different label vectors, which DeLong's variance does not cover)."""
    ca, cb = np.asarray(correct_a), np.asarray(correct_b)
    if ca.shape == cb.shape and np.array_equal(ca.astype(bool), cb.astype(bool)):
        return delong(conf_a, conf_b, ca, level)
    return bootstrap_auroc_difference(conf_a, correct_a, conf_b, correct_b, None, n_boot, seed, level)


def ood_difference(id_a, ood_a, id_b, ood_b, level: float = 0.95) -> Paired:
    """OOD AUROC (positives = in-distribution images) of method a minus method b: DeLong on the pooled ID + OOD
    images, which both methods score (one label vector by construction)."""
    ia, oa = _check(id_a, "id_a"), _check(ood_a, "ood_a")
    ib, ob = _check(id_b, "id_b", ia.size), _check(ood_b, "ood_b", oa.size)
    pos = np.r_[np.ones(ia.size, bool), np.zeros(oa.size, bool)]
    return delong(np.r_[ia, oa], np.r_[ib, ob], pos, level)


def combine(per_seed: list[Paired], level: float = 0.95) -> Paired:
    """One test over seeds: the mean of the per-seed differences, with Var = sum(se_s^2) / k^2 (seeds are
    independent: different networks, or different resamples of them), tested by z = sum(d_s) / sqrt(sum(se_s^2)).

    This is Stouffer's weighted Z (Liptak 1958; Whitlock, J. Evol. Biol. 2005) with each seed's z_s = d_s / se_s
    weighted by se_s; it is the z-test of the equal-weight mean difference, so the estimate is the one the
    leaderboard's mean column shows and a seed where the sign flips pulls the statistic down (Fisher's method on
    two-sided p-values would count it as evidence). The variance is *within* seeds only: it says whether these k
    trained networks score the methods differently on the image population, not whether a new seed would."""
    if not per_seed:
        raise ValueError("combine: no per-seed results")
    k = len(per_seed)
    diff = float(np.mean([r.diff for r in per_seed]))
    se = float(np.sqrt(sum(r.se ** 2 for r in per_seed)) / k)
    tests = sorted({r.test for r in per_seed})
    return _normal(diff, se, "+".join(tests), level, sum(r.n_pos for r in per_seed),
                   sum(r.n_neg for r in per_seed))
