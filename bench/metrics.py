"""Evaluation metrics for misclassification detection, OOD detection and calibration.

Conventions
-----------
* Confidence ``c``: HIGHER = MORE TRUSTWORTHY (predicted correct / in-distribution).
* Rates and areas are returned as PERCENT floats in [0, 100]; NLL and Brier are raw.
  AURC/E-AURC are also percent (x100); papers often report them x1000.
* Inputs are 1-D array-likes (anything ``np.asarray`` accepts; convert torch tensors
  with ``.numpy()``). Class probabilities are (N, C) arrays.
* ``ValueError`` (one-line message naming the argument) on: mismatched lengths, empty
  input, NaN/inf scores/confidences/probabilities, non-binary label masks.
* Ranking metrics (AUROC, AP, FPR@TPR) are undefined when only one class is present;
  they then return ``float('nan')`` instead of raising, so e.g. a perfect classifier
  (no errors) does not crash a benchmark. This applies to both AP variants, even the one
  whose value would be trivially 100.
* Ties: scores that are equal form one group at a single threshold, so no result
  depends on the input order (AUROC counts a tied positive/negative pair as 1/2).
* Misclassification: positives = correct predictions. OOD: positives = in-distribution
  (OpenOOD counts OOD as positive; its AUPR-In/Out are our aupr_in/aupr_out).
"""
import numpy as np

__all__ = [
    "auroc", "average_precision", "fpr_at_tpr", "aurc", "eaurc",
    "augrc", "risk_at_coverage", "coverage_at_risk",
    "misclassification_metrics", "ood_metrics",
    "ece", "adaptive_ece", "classwise_ece", "mce", "brier_decomposition",
    "nll", "brier", "accuracy", "classification_metrics",
]


# ----------------------------------------------------------------------------- checks
def _scores(x, name):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty input")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _binary(x, name, n, ref="scores"):
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size != n:
        raise ValueError(f"{name}: length {a.size} does not match {ref} length {n}")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name}: must contain only 0/1 or bool values")
    return a.astype(bool)


def _probs_labels(probs, labels):
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape (N, C), got {p.shape}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError("probs: empty input")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs: contains NaN or inf")
    return p, _labels(labels, p.shape[0], p.shape[1])


def _labels(labels, n, n_classes=None):
    y = np.asarray(labels)
    if y.ndim != 1 or y.size != n:
        raise ValueError(f"labels: expected shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {y.dtype}")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels: values must lie in [0, {n_classes})")
    return y


def _prep(scores, positives):
    s = _scores(scores, "scores")
    return s, _binary(positives, "positives", s.size)


def _curve(s, pos):
    """Cumulative (tp, fp) counts at each distinct threshold, highest threshold first.

    Only the last index of each tie group is kept, so tied scores act as one threshold
    (same construction as sklearn's ``_binary_clf_curve``).
    """
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(pos)[last]
    fps = (last + 1) - tps
    return tps, fps


# ---------------------------------------------------------------------- ranking metrics
def auroc(scores, positives):
    """P(random positive scores higher than random negative), ties = 1/2; percent."""
    s, pos = _prep(scores, positives)
    n_pos = int(pos.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with midranks: a tie group of size m starting at rank r gets rank
    # r + (m - 1) / 2, which is exactly what makes a tied pair count 1/2.
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts + 1
    midranks = starts + (counts - 1) / 2.0
    rank_sum = midranks[inv][pos].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(100.0 * u / (n_pos * n_neg))


def average_precision(scores, positives):
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds (= sklearn); percent."""
    s, pos = _prep(scores, positives)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == s.size:
        return float("nan")
    tps, fps = _curve(s, pos)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(100.0 * np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(scores, positives, tpr=0.95):
    """Fraction of negatives with score >= t (percent), where t is the largest threshold
    keeping at least ``tpr`` of the positives (score >= t)."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr: must lie in (0, 1], got {tpr}")
    s, pos = _prep(scores, positives)
    n_pos = int(pos.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    tps, fps = _curve(s, pos)
    # Compare tps / n_pos (not tps against tpr * n_pos) so float rounding matches
    # sklearn's roc_curve exactly; the last threshold always reaches tpr = 1.
    idx = int(np.argmax(tps / n_pos >= tpr))
    return float(100.0 * fps[idx] / n_neg)


# --------------------------------------------------------------------- risk-coverage
def _aurc_from_counts(group_sizes, group_errors):
    cum_n = np.cumsum(group_sizes)
    risk = np.cumsum(group_errors) / cum_n
    # Every one of the n sorted prefix positions counts once; within a tie group all
    # positions share the group-level risk, so input order within a tie cannot matter.
    return float(100.0 * np.sum(group_sizes * risk) / cum_n[-1])


def aurc(confidence, correct):
    """Area under the risk-coverage curve, percent (x100, not the x1000 of many papers).

    Discrete definition: samples sorted by confidence descending; AURC = mean over the n
    prefix positions k of the error rate among the top k. Tied confidences form one group
    (coverage jumps by the whole group, risk = error rate of all samples with c >= t), so
    the result is independent of input order. Defined for any mix (all correct -> 0).
    """
    c = _scores(confidence, "confidence")
    ok = _binary(correct, "correct", c.size, "confidence")
    errs, oks = _curve(c, ~ok)  # cumulative errors / corrects per distinct threshold
    return _aurc_from_counts(np.diff(np.r_[0, errs + oks]), np.diff(np.r_[0, errs]))


def _optimal_aurc(n, n_err):
    # All correct samples ranked first, each at its own position (no ties).
    if n_err == 0:
        return 0.0
    errors = np.r_[np.zeros(n - n_err), np.ones(n_err)]
    return _aurc_from_counts(np.ones(n), errors)


def eaurc(confidence, correct):
    """Excess AURC = aurc - AURC of the optimal ranking (same discrete definition), percent.

    Uses the exact discrete optimum rather than the continuous approximation
    r + (1 - r) ln(1 - r) (r = error rate) used by some papers; they differ by O(1/n).
    """
    c = _scores(confidence, "confidence")
    ok = _binary(correct, "correct", c.size, "confidence")
    return aurc(c, ok) - _optimal_aurc(c.size, int((~ok).sum()))


def augrc(confidence, correct):
    """Area under the generalized risk-coverage curve (Traub et al., NeurIPS 2024), percent.

    Generalized risk at a threshold = accepted AND wrong samples / ALL n samples (not / accepted, as
    AURC's selective risk). Same discrete convention as ``aurc``: mean over the n sorted prefix positions, a
    tie group's positions sharing the value at the end of the group. Random ranking -> about r / 2,
    perfect ranking -> about r^2 / 2 (r = error rate), both up to O(1/n).
    """
    c = _scores(confidence, "confidence")
    ok = _binary(correct, "correct", c.size, "confidence")
    errs, oks = _curve(c, ~ok)
    sizes = np.diff(np.r_[0, errs + oks])
    return float(100.0 * np.sum(sizes * errs) / c.size ** 2)


def _accept_curve(confidence, correct):
    """(coverage, selective risk) at every distinct threshold, highest threshold first (fractions)."""
    c = _scores(confidence, "confidence")
    ok = _binary(correct, "correct", c.size, "confidence")
    errs, oks = _curve(c, ~ok)
    accepted = errs + oks
    return accepted / c.size, errs / accepted


def risk_at_coverage(confidence, correct, coverage=0.9):
    """Selective risk (percent): error rate among samples with c >= t, t the largest threshold accepting at
    least ``coverage`` of the samples (ties are accepted or rejected together, so the coverage reached can
    exceed the target)."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage: must lie in (0, 1], got {coverage}")
    cov, risk = _accept_curve(confidence, correct)
    # coverage is compared as a fraction (cumulative count / n), as fpr_at_tpr compares rates
    return float(100.0 * risk[int(np.argmax(cov >= coverage))])


def coverage_at_risk(confidence, correct, risk=0.01):
    """Largest coverage (percent) over thresholds t whose selective risk (errors among c >= t) is <= ``risk``;
    0 when no threshold reaches it."""
    if not 0.0 <= risk <= 1.0:
        raise ValueError(f"risk: must lie in [0, 1], got {risk}")
    cov, sel = _accept_curve(confidence, correct)
    good = sel <= risk + 1e-12  # a margin for rounding in errors / accepted
    return float(100.0 * cov[good].max()) if good.any() else 0.0


def misclassification_metrics(confidence, correct):
    """Failure-prediction metrics; positives = correct predictions. Percent values.

    Keys: auroc, aupr_error (errors positive, score -c), aupr_success (correct positive,
    score c), fpr95 (fraction of errors accepted at the threshold keeping 95% of correct),
    aurc, eaurc, augrc, risk_cov90 (selective risk at 90% coverage), cov_risk1 (coverage at 1% selective
    risk).
    """
    c = _scores(confidence, "confidence")
    ok = _binary(correct, "correct", c.size, "confidence")
    return {
        "auroc": auroc(c, ok),
        "aupr_error": average_precision(-c, ~ok),
        "aupr_success": average_precision(c, ok),
        "fpr95": fpr_at_tpr(c, ok, 0.95),
        "aurc": aurc(c, ok),
        "eaurc": eaurc(c, ok),
        "augrc": augrc(c, ok),
        "risk_cov90": risk_at_coverage(c, ok, 0.9),
        "cov_risk1": coverage_at_risk(c, ok, 0.01),
    }


def ood_metrics(conf_id, conf_ood):
    """OOD-detection metrics; positives = in-distribution (ID). Percent values.

    Keys: auroc, aupr_in (ID positive, score c), aupr_out (OOD positive, score -c),
    fpr95 (fraction of OOD accepted at the threshold keeping 95% of ID).
    """
    c_id = _scores(conf_id, "conf_id")
    c_ood = _scores(conf_ood, "conf_ood")
    c = np.r_[c_id, c_ood]
    is_id = np.r_[np.ones(c_id.size, bool), np.zeros(c_ood.size, bool)]
    return {
        "auroc": auroc(c, is_id),
        "aupr_in": average_precision(c, is_id),
        "aupr_out": average_precision(-c, ~is_id),
        "fpr95": fpr_at_tpr(c, is_id, 0.95),
    }


# ------------------------------------------------------------------------- calibration
def ece(probs, labels, n_bins=15):
    """Expected calibration error (percent) of max-prob confidence vs argmax accuracy.

    Equal-width right-closed bins (0, 1/B], (1/B, 2/B], ..., (1-1/B, 1]; a confidence of
    exactly 0 goes into the first bin. ECE = sum_b |acc_b - conf_b| * n_b / N.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive integer, got {n_bins}")
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # side="left" puts c == edges[k] into bin k-1, i.e. right-closed intervals.
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)
    gap = np.abs(np.bincount(b, hit, int(n_bins)) - np.bincount(b, conf, int(n_bins)))
    # |acc_b - conf_b| * n_b == |sum hit - sum conf| within bin b; empty bins add 0.
    return float(100.0 * gap.sum() / conf.size)


def _bin_index(conf, n_bins):
    # the equal-width right-closed bins of ``ece`` (0 goes into the first)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)


def _check_bins(n_bins):
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive integer, got {n_bins}")


def mce(probs, labels, n_bins=15):
    """Maximum calibration error (percent): the largest |acc_b - conf_b| over the non-empty bins of ``ece``."""
    _check_bins(n_bins)
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    b = _bin_index(conf, n_bins)
    n = np.bincount(b, minlength=int(n_bins))
    full = n > 0
    gap = np.abs(np.bincount(b, hit, int(n_bins))[full] - np.bincount(b, conf, int(n_bins))[full]) / n[full]
    return float(100.0 * gap.max())


def adaptive_ece(probs, labels, n_bins=15):
    """Adaptive (equal-mass) ECE, percent: samples sorted by max probability (stable sort) and cut into
    ``n_bins`` consecutive groups whose sizes differ by at most one (``np.array_split``); then the ECE sum.
    Tied confidences that straddle a cut may fall in either group, so with ties the value can depend on the
    input order."""
    _check_bins(n_bins)
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    gap = sum(abs(hit[g].sum() - conf[g].sum()) for g in np.array_split(order, min(int(n_bins), conf.size)))
    return float(100.0 * gap / conf.size)


def classwise_ece(probs, labels, n_bins=15):
    """Classwise ECE (Kull et al., NeurIPS 2019), percent: for each class k, the ECE of p_k against the event
    y == k over the equal-width bins of ``ece`` (all samples), averaged over the C classes."""
    _check_bins(n_bins)
    p, y = _probs_labels(probs, labels)
    total = 0.0
    for k in range(p.shape[1]):
        b = _bin_index(p[:, k], n_bins)
        total += np.abs(np.bincount(b, (y == k).astype(np.float64), int(n_bins))
                        - np.bincount(b, p[:, k], int(n_bins))).sum() / y.size
    return float(100.0 * total / p.shape[1])


def brier_decomposition(probs, labels, n_bins=15):
    """Murphy's (1973) decomposition of the top-label Brier score, raw (not percent).

    The forecast is the max probability c, the event is "the prediction is correct" (o = 1), binned on c with
    the equal-width bins of ``ece``. With bin b holding n_b samples of mean confidence c_b and accuracy o_b,
    and o the overall accuracy: reliability = sum n_b/N (c_b - o_b)^2, resolution = sum n_b/N (o_b - o)^2,
    uncertainty = o (1 - o). mean (c - o)^2 = reliability - resolution + uncertainty + the within-bin
    variance of c (0 when every bin holds one confidence value). Keys: rel, res, unc.
    """
    _check_bins(n_bins)
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    b = _bin_index(conf, n_bins)
    n = np.bincount(b, minlength=int(n_bins)).astype(np.float64)
    full = n > 0
    c_b = np.bincount(b, conf, int(n_bins))[full] / n[full]
    o_b = np.bincount(b, hit, int(n_bins))[full] / n[full]
    w = n[full] / conf.size
    o = hit.mean()
    return {"rel": float(np.sum(w * (c_b - o_b) ** 2)), "res": float(np.sum(w * (o_b - o) ** 2)),
            "unc": float(o * (1.0 - o))}


def nll(probs, labels):
    """Mean negative log-likelihood of the true class, p clipped at 1e-12 (raw)."""
    p, y = _probs_labels(probs, labels)
    return float(np.mean(-np.log(np.maximum(p[np.arange(y.size), y], 1e-12))))


def brier(probs, labels):
    """Mean over samples of sum_k (p_k - onehot_k)^2 (raw, range 0..2)."""
    p, y = _probs_labels(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def accuracy(probs_or_preds, labels):
    """Top-1 accuracy (percent) from (N, C) probabilities or (N,) integer predictions."""
    a = np.asarray(probs_or_preds)
    if a.ndim == 2:
        p, y = _probs_labels(a, labels)
        pred = p.argmax(axis=1)
    elif a.ndim == 1:
        if a.size == 0:
            raise ValueError("probs_or_preds: empty input")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"probs_or_preds: 1-D input must be integer, got {a.dtype}")
        pred, y = a, _labels(labels, a.size)
    else:
        raise ValueError(f"probs_or_preds: expected (N, C) or (N,), got {a.shape}")
    return float(100.0 * np.mean(pred == y))


def classification_metrics(probs, labels, confidence):
    """accuracy, ece, nll, brier of ``probs`` plus misclassification metrics of
    ``confidence`` against argmax correctness."""
    p, y = _probs_labels(probs, labels)
    c = _scores(confidence, "confidence")
    if c.size != y.size:
        raise ValueError(f"confidence: length {c.size} does not match probs length {y.size}")
    out = {"accuracy": accuracy(p, y), "ece": ece(p, y), "nll": nll(p, y), "brier": brier(p, y),
           "ece_adaptive": adaptive_ece(p, y), "ece_classwise": classwise_ece(p, y), "mce": mce(p, y)}
    out.update({f"brier_{k}": v for k, v in brier_decomposition(p, y).items()})
    out.update(misclassification_metrics(c, p.argmax(axis=1) == y))
    return out
