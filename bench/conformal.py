"""Guarantees from a calibration set: split-conformal prediction sets and selective classification with a risk bound.

Pure functions of saved outputs (numpy arrays), post-hoc: nothing here runs a model.

Split conformal (Vovk et al.; the form of Angelopoulos & Bates' "gentle introduction"): a score ``s(x, y)`` (higher =
less conforming) is computed on n calibration images with their true labels; ``qhat`` is the k-th smallest of those
scores, k = ceil((n + 1)(1 - alpha)) (+inf when k > n: every class then enters every set); a test image's set is
``{y : s(x, y) <= qhat}``. For exchangeable calibration and test data, P(y in set) >= 1 - alpha, and, when the scores
have no ties, <= 1 - alpha + 1 / (n + 1). Scores:

- ``lac`` (THR/LAC, Sadinle, Lei & Wasserman 2019): 1 - p_y.
- ``aps`` (Romano, Sesia & Candes 2020): the probability mass of the classes ranked above y, plus p_y (times u ~ U(0, 1)
  per image when randomised).
- ``raps`` (Angelopoulos, Bates, Malik & Jordan 2021): aps + lam * max(0, rank(y) - k_reg), rank 1 = the top class.

Non-randomised by default (u = 1: deterministic sets, which may be empty when the model is accurate: an image whose
top probability is too low for the quantile gets no class); ``randomized=True`` draws one u per image from
``numpy.random.default_rng(seed)``.

Selective guarantee (SGR, Geifman & El-Yaniv, NeurIPS 2017): a threshold on the confidence such that, with
probability >= 1 - delta over the calibration draw, the selective risk (error rate among accepted images) is <= the
returned bound, which is < the target risk. Binary search over the calibration confidences, each tested threshold's
bound the one-sided binomial (Clopper-Pearson) upper limit at delta / ceil(log2 m) (the union over the tested
thresholds).

Errors: ``ValueError`` with a one-line message naming the argument (bench/metrics.py's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SCORES", "ALPHAS", "RAPS_K_REG", "RAPS_LAMBDA", "SGR_RISK", "SGR_DELTA", "conformity_scores",
           "class_scores", "conformal_quantile", "prediction_sets", "coverage", "mean_set_size", "coverage_bounds",
           "SplitConformal", "SGRResult", "sgr", "selective_outcome", "guarantee_metrics", "metric_names"]

SCORES = ("lac", "aps", "raps")
ALPHAS = (0.1, 0.05)  # the miscoverage levels a run reports
# RAPS' regulariser, fixed in advance (not tuned on the calibration set, which would need a split of it): with 10
# classes and accurate models the true label is in the top 2 for nearly every image, so sets larger than 2 pay
RAPS_K_REG = 2
RAPS_LAMBDA = 0.01
SGR_RISK = 0.02  # target selective risk r* (a fraction): 2%, about twice a quick-profile LeNet's test error
SGR_DELTA = 0.001  # confidence parameter of the bound (the paper's value)


def _probs(probs, name="probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"{name}: expected class probabilities of shape (N, C) with N >= 1, C >= 2, got {p.shape}")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError(f"{name}: must be finite and non-negative (probabilities, not logits)")
    return p


def _labels(labels, n: int, k: int, name="labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one label per row of probs), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= k).any():
        raise ValueError(f"{name}: must be integer classes in [0, {k})")
    return y.astype(np.int64)


def _alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def _u(n: int, randomized: bool, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=n) if randomized else np.ones(n)


def class_scores(probs, score: str = "lac", *, k_reg: int = RAPS_K_REG, lam: float = RAPS_LAMBDA,
                 randomized: bool = False, seed: int = 0) -> np.ndarray:
    """(N, C) conformity scores of every class of every image (higher = less conforming)."""
    p = _probs(probs)
    if score not in SCORES:
        raise ValueError(f"score: {score!r} is not one of {', '.join(SCORES)}")
    if score == "lac":
        return 1.0 - p
    if k_reg < 0 or lam < 0:
        raise ValueError(f"k_reg and lam must be >= 0, got k_reg={k_reg}, lam={lam}")
    n, k = p.shape
    order = np.argsort(-p, axis=1, kind="stable")  # classes by decreasing probability (ties: lower index first)
    sorted_p = np.take_along_axis(p, order, axis=1)
    above = np.cumsum(sorted_p, axis=1) - sorted_p  # mass of the classes ranked strictly above each one
    s_sorted = above + _u(n, randomized, seed)[:, None] * sorted_p
    if score == "raps":
        rank = np.arange(1, k + 1)[None, :]
        s_sorted = s_sorted + lam * np.maximum(0, rank - k_reg)
    out = np.empty_like(s_sorted)
    np.put_along_axis(out, order, s_sorted, axis=1)
    return out


def conformity_scores(probs, labels, score: str = "lac", **kw) -> np.ndarray:
    """(N,) score of each image's true label."""
    p = _probs(probs)
    y = _labels(labels, *p.shape)
    return class_scores(p, score, **kw)[np.arange(len(y)), y]


def conformal_quantile(scores, alpha: float) -> float:
    """The k-th smallest calibration score, k = ceil((n + 1)(1 - alpha)); +inf when k > n (too few calibration
    images for this alpha: the sets must hold every class)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"scores: expected a non-empty 1-D array of finite values, got shape {s.shape}")
    n = s.size
    # the small slack keeps e.g. (19 + 1) * 0.95 = 19.000000000000004 from rounding up to 20
    k = math.ceil((n + 1) * (1 - _alpha(alpha)) - 1e-9)
    return float("inf") if k > n else float(np.partition(s, k - 1)[k - 1])


def prediction_sets(probs, qhat: float, score: str = "lac", **kw) -> np.ndarray:
    """(N, C) boolean membership of each class in each image's set."""
    return class_scores(probs, score, **kw) <= qhat


def coverage(sets, labels) -> float:
    """Percent of images whose true label is in their set."""
    s = np.asarray(sets, dtype=bool)
    y = _labels(labels, s.shape[0], s.shape[1])
    return 100.0 * float(s[np.arange(len(y)), y].mean())


def mean_set_size(sets) -> float:
    """Mean number of classes per set (0 for an empty set)."""
    return float(np.asarray(sets, dtype=bool).sum(1).mean())


def coverage_bounds(n: int, alpha: float) -> tuple[float, float]:
    """(lower, upper) bounds of the expected coverage in percent, over calibration and test draws, for n exchangeable
    calibration images: k / (n + 1) >= 1 - alpha, k = ceil((n + 1)(1 - alpha)), exact without ties (ties only raise
    it), and 1 - alpha + 1 / (n + 1) above it; 100 when k > n."""
    if n < 1:
        raise ValueError(f"n: the calibration set needs at least one image, got {n}")
    k = math.ceil((n + 1) * (1 - _alpha(alpha)) - 1e-9)
    if k > n:
        return 100.0, 100.0
    return 100.0 * k / (n + 1), 100.0 * (1 - alpha + 1 / (n + 1))


@dataclass(frozen=True)
class SplitConformal:
    """A calibrated split-conformal predictor: ``qhat`` from ``calibrate``, sets from ``sets``."""

    score: str
    alpha: float
    qhat: float
    n: int
    k_reg: int = RAPS_K_REG
    lam: float = RAPS_LAMBDA
    randomized: bool = False
    seed: int = 0

    @classmethod
    def calibrate(cls, probs, labels, *, score: str = "lac", alpha: float = 0.1, k_reg: int = RAPS_K_REG,
                  lam: float = RAPS_LAMBDA, randomized: bool = False, seed: int = 0) -> SplitConformal:
        s = conformity_scores(probs, labels, score, k_reg=k_reg, lam=lam, randomized=randomized, seed=seed)
        return cls(score, alpha, conformal_quantile(s, alpha), len(s), k_reg, lam, randomized, seed)

    def sets(self, probs, seed: int | None = None) -> np.ndarray:
        """Sets of test images (randomised: u drawn from ``seed``, default the calibration seed + 1, so test and
        calibration draws differ)."""
        return prediction_sets(probs, self.qhat, self.score, k_reg=self.k_reg, lam=self.lam,
                               randomized=self.randomized, seed=self.seed + 1 if seed is None else seed)


# ------------------------------------------------------------------------------------------- selective risk (SGR)
def _binomial_upper(errors: int, m: int, delta: float) -> float:
    """The largest risk b with P(Bin(m, b) <= errors) >= delta: the one-sided Clopper-Pearson upper limit."""
    from scipy.stats import beta

    if errors >= m:
        return 1.0
    return float(beta.ppf(1 - delta, errors + 1, m - errors))


@dataclass(frozen=True)
class SGRResult:
    threshold: float  # accept images with confidence >= threshold (+inf: no threshold met the target: reject all)
    bound: float  # guaranteed selective risk (fraction) at that threshold, with probability >= 1 - delta; nan if none
    calib_risk: float  # empirical selective risk on the calibration set (fraction); nan if none
    calib_coverage: float  # fraction of calibration images accepted
    target: float
    delta: float


def sgr(confidence, correct, target_risk: float = SGR_RISK, delta: float = SGR_DELTA) -> SGRResult:
    """Geifman & El-Yaniv's selection with guaranteed risk on calibration confidences (higher = more trustworthy)
    and 0/1 correctness. Sorted ascending, z_min = 1, z_max = m; ceil(log2 m) times: z = ceil((z_min + z_max) / 2),
    threshold = the z-th confidence, its bound at delta / ceil(log2 m); below the target -> z_max = z (try more
    coverage), else z_min = z. Returned: the tested threshold of the largest coverage whose bound is below the target
    (the paper returns the last tested one, whose bound can exceed the target; every tested one is covered by the
    union bound, so choosing among them keeps the guarantee)."""
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct)
    if c.ndim != 1 or c.size < 2 or not np.all(np.isfinite(c)):
        raise ValueError(f"confidence: expected a 1-D array of at least 2 finite values, got shape {c.shape}")
    if ok.shape != c.shape or not np.all((ok == 0) | (ok == 1)):
        raise ValueError(f"correct: expected {c.size} values of 0/1, got shape {ok.shape}")
    if not 0 < target_risk < 1 or not 0 < delta < 1:
        raise ValueError(f"target_risk and delta must lie in (0, 1), got {target_risk}, {delta}")
    m = c.size
    order = np.argsort(c, kind="stable")
    cs, err = c[order], 1 - ok[order].astype(np.int64)
    err_at_or_above = np.cumsum(err[::-1])[::-1]  # errors among images of sorted index >= i
    steps = math.ceil(math.log2(m))
    d = delta / steps
    z_min, z_max = 1, m
    best = None
    for _ in range(steps):
        z = math.ceil((z_min + z_max) / 2)
        theta = cs[z - 1]
        first = int(np.searchsorted(cs, theta, side="left"))  # ties with theta are accepted too
        accepted, errors = m - first, int(err_at_or_above[first])
        b = _binomial_upper(errors, accepted, d)
        if b < target_risk:
            z_max = z
            if best is None or theta < best[0]:
                best = (theta, b, errors / accepted, accepted / m)
        else:
            z_min = z
    if best is None:
        return SGRResult(float("inf"), float("nan"), float("nan"), 0.0, target_risk, delta)
    return SGRResult(float(best[0]), best[1], best[2], best[3], target_risk, delta)


def selective_outcome(result: SGRResult, confidence, correct) -> tuple[float, float]:
    """(risk %, coverage %) of the threshold on test images: error rate among the accepted (nan if none is) and the
    fraction accepted."""
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    keep = c >= result.threshold
    cov = 100.0 * float(keep.mean())
    risk = 100.0 * float(1.0 - ok[keep].mean()) if keep.any() else float("nan")
    return risk, cov


# ------------------------------------------------------------------------------------------- rows of a run / score
def metric_names() -> list[str]:
    """The names of ``guarantee_metrics``' values, in table order."""
    names = [f"cp_{s}_{q}{int(round(100 * (1 - a)))}" for a in ALPHAS for s in SCORES for q in ("cov", "size")]
    return [*names, "sgr_risk", "sgr_coverage", "sgr_bound"]


def guarantee_metrics(cal_probs, cal_labels, cal_confidence, probs, labels, confidence) -> dict[str, float]:
    """Split-conformal coverage (%) and mean set size of every score at every alpha in ``ALPHAS``, calibrated on the
    calibration outputs, measured on the test outputs (non-randomised); SGR's realised risk and coverage (%) at
    ``SGR_RISK``, ``SGR_DELTA`` with the method's confidence, and its calibrated bound (%, nan when no threshold met
    the target)."""
    cal_p, p = _probs(cal_probs, "calibration probs"), _probs(probs)
    if cal_p.shape[1] != p.shape[1]:
        raise ValueError(f"calibration probs have {cal_p.shape[1]} classes, test probs {p.shape[1]}")
    cal_y, y = _labels(cal_labels, *cal_p.shape, "calibration labels"), _labels(labels, *p.shape)
    out: dict[str, float] = {}
    for a in ALPHAS:
        level = int(round(100 * (1 - a)))
        for s in SCORES:
            sets = SplitConformal.calibrate(cal_p, cal_y, score=s, alpha=a).sets(p)
            out[f"cp_{s}_cov{level}"] = coverage(sets, y)
            out[f"cp_{s}_size{level}"] = mean_set_size(sets)
    res = sgr(cal_confidence, cal_p.argmax(1) == cal_y)
    risk, cov = selective_outcome(res, confidence, p.argmax(1) == y)
    out.update(sgr_risk=risk, sgr_coverage=cov, sgr_bound=100.0 * res.bound)
    return out
