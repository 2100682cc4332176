"""Tests for bench.metrics: hand-worked tiny cases, sklearn cross-checks, error paths."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from bench.metrics import (
    accuracy,
    adaptive_ece,
    augrc,
    aurc,
    auroc,
    average_precision,
    brier,
    brier_decomposition,
    classification_metrics,
    classwise_ece,
    coverage_at_risk,
    eaurc,
    ece,
    fpr_at_tpr,
    mce,
    misclassification_metrics,
    nll,
    ood_metrics,
    risk_at_coverage,
)

SEEDS = [0, 1, 2, 3, 4, 5, 6, 7]


def _random_case(seed, n=None):
    """Scores with many ties (coarse grid) and a random binary mask containing both classes."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(5, 300))
    scores = rng.integers(0, 12, n) / 11.0
    pos = rng.random(n) < rng.uniform(0.2, 0.8)
    pos[0], pos[1] = True, False
    return scores, pos


def _sk_fpr(scores, pos, tpr):
    fpr, tprs, _ = roc_curve(pos, scores, drop_intermediate=False)
    return 100.0 * fpr[np.argmax(tprs >= tpr)]


def _brute_fpr(scores, pos, tpr):
    # Definition: largest threshold t with frac(pos >= t) >= tpr; report frac(neg >= t).
    t = max(s for s in np.unique(scores) if np.mean(scores[pos] >= s) >= tpr)
    return 100.0 * np.mean(scores[~pos] >= t)


def _brute_aurc(conf, ok):
    # Per sample: risk = error rate among all samples with c >= c_i (tie group shares it).
    return 100.0 * np.mean([np.mean(~ok[conf >= c]) for c in conf])


# ------------------------------------------------------------------------------ AUROC
def test_auroc_hand():
    s, p = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    assert sum(p) == 2
    # (pos, neg) pairs: (.9,.8) win, (.9,.6) win, (.7,.8) loss, (.7,.6) win -> 3/4
    assert auroc(s, p) == pytest.approx(75.0)


def test_auroc_hand_tie():
    s, p = [0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]
    assert sum(p) == 2 and s.count(0.5) == 2
    # pairs: (.9,.5) 1, (.9,.1) 1, (.5,.5) tie 1/2, (.5,.1) 1 -> 3.5/4
    assert auroc(s, p) == pytest.approx(87.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_auroc_vs_sklearn_and_bruteforce(seed):
    s, p = _random_case(seed)
    np.testing.assert_allclose(auroc(s, p), 100 * roc_auc_score(p, s), rtol=1e-12)
    diff = s[p][:, None] - s[~p][None, :]
    brute = 100 * (np.mean(diff > 0) + 0.5 * np.mean(diff == 0))
    np.testing.assert_allclose(auroc(s, p), brute, rtol=1e-12)


# --------------------------------------------------------------------------------- AP
def test_ap_hand():
    s, p = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    assert sum(p) == 2
    # t=.9: P=1, R=1/2; t=.8: R unchanged; t=.7: P=2/3, R=1; t=.6: R unchanged
    # AP = 1/2*1 + 1/2*2/3 = 5/6
    assert average_precision(s, p) == pytest.approx(100 * 5 / 6)


def test_ap_hand_tie_grouped():
    s, p = [0.9, 0.5, 0.5, 0.1], [0, 1, 1, 0]
    assert sum(p) == 2 and s.count(0.5) == 2
    # t=.9: tp=0 (R=0); t=.5 (group of 3 samples: 2 pos, plus the .9 neg): P=2/3, R=1
    # AP = 1 * 2/3. (Breaking the tie pos-first would give 1/2*1/2 + 1/2*2/3 = 7/12.)
    assert average_precision(s, p) == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_ap_vs_sklearn(seed):
    s, p = _random_case(seed)
    np.testing.assert_allclose(
        average_precision(s, p), 100 * average_precision_score(p, s), rtol=1e-12)


# ----------------------------------------------------------------------------- FPR@TPR
def test_fpr_hand():
    s, p = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1]
    assert sum(p) == 3
    # tpr .95 needs all 3 positives -> t=.5 -> both negatives accepted -> 100
    assert fpr_at_tpr(s, p) == pytest.approx(100.0)
    # tpr .6 needs 2/3 -> t=.7 -> negatives >= .7: only .8 -> 1/2
    assert fpr_at_tpr(s, p, tpr=0.6) == pytest.approx(50.0)


def test_fpr_hand_tie():
    s, p = [0.9, 0.7, 0.7, 0.3], [1, 1, 0, 0]
    assert sum(p) == 2 and s.count(0.7) == 2
    # tpr .95 needs both positives -> t=.7; the negative tied at .7 is accepted -> 1/2
    assert fpr_at_tpr(s, p) == pytest.approx(50.0)
    # tpr .5 -> t=.9 -> no negative accepted
    assert fpr_at_tpr(s, p, tpr=0.5) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tpr", [0.95, 0.8, 0.5, 1.0])
def test_fpr_vs_sklearn_and_definition(seed, tpr):
    s, p = _random_case(seed)
    np.testing.assert_allclose(fpr_at_tpr(s, p, tpr), _sk_fpr(s, p, tpr), rtol=1e-12)
    np.testing.assert_allclose(fpr_at_tpr(s, p, tpr), _brute_fpr(s, p, tpr), rtol=1e-12)


def test_fpr_exact_fraction_boundary():
    # 20 positives: 19/20 == 0.95 must count as reaching tpr (float-safe comparison).
    s = np.r_[np.arange(20, 0, -1), 0.5, 100.0]
    p = np.r_[np.ones(20, bool), False, False]
    assert 19 / 20 >= 0.95
    # t = 2 (19 positives kept); negatives >= 2: only the 100.0 one -> 1/2
    assert fpr_at_tpr(s, p) == pytest.approx(50.0)
    assert fpr_at_tpr(s, p) == pytest.approx(_sk_fpr(s, p, 0.95))


# -------------------------------------------------------------------------------- AURC
def test_aurc_hand_no_ties():
    c, ok = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    assert sum(ok) == 2
    # prefix risks k=1..4: 0/1, 1/2, 1/3, 2/4 -> mean = (0 + .5 + 1/3 + .5)/4 = 1/3
    assert aurc(c, ok) == pytest.approx(100 / 3)
    # optimal (correct first): 0, 0, 1/3, 1/2 -> 5/24; eaurc = 1/3 - 5/24 = 1/8
    assert eaurc(c, ok) == pytest.approx(12.5)


def test_aurc_hand_tie_group():
    c, ok = [0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0]
    assert c.count(0.5) == 2 and sum(ok) == 2
    # groups: {.9}: risk 0; {.5,.5}: 1 error among 3 -> 1/3 for 2 positions; {.1}: 2/4
    # AURC = (0 + 2/3 + 1/2)/4 = 7/24 (error-first order would give 1/3, correct-first 5/24)
    assert aurc(c, ok) == pytest.approx(100 * 7 / 24)


def test_aurc_worst_and_perfect_ranking():
    c = [0.9, 0.8, 0.7, 0.6]
    # worst: errors first -> risks 1, 1, 2/3, 2/4 -> (19/6)/4 = 19/24
    assert aurc(c, [0, 0, 1, 1]) == pytest.approx(100 * 19 / 24)
    # optimal for 2 errors in 4 is 5/24 -> eaurc = 14/24
    assert eaurc(c, [0, 0, 1, 1]) == pytest.approx(100 * 14 / 24)
    assert aurc(c, [1, 1, 0, 0]) == pytest.approx(100 * 5 / 24)
    assert eaurc(c, [1, 1, 0, 0]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_aurc_order_invariant_with_ties(seed):
    c, ok = _random_case(seed)
    assert len(np.unique(c)) < len(c)  # ties really present
    ref = aurc(c, ok)
    np.testing.assert_allclose(ref, _brute_aurc(c, ok), rtol=1e-12)
    rng = np.random.default_rng(100 + seed)
    for _ in range(5):
        perm = rng.permutation(len(c))
        np.testing.assert_allclose(aurc(c[perm], ok[perm]), ref, rtol=1e-12)
        np.testing.assert_allclose(eaurc(c[perm], ok[perm]), eaurc(c, ok), rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_eaurc_zero_for_perfect_ranking_and_near_continuous(seed):
    rng = np.random.default_rng(seed)
    n, r = 20000, rng.uniform(0.05, 0.5)
    ok = rng.random(n) >= r
    c = np.where(ok, 1.0 + rng.random(n), rng.random(n))  # every correct above every error
    assert eaurc(c, ok) == pytest.approx(0.0, abs=1e-9)
    rate = np.mean(~ok)
    approx = 100 * (rate + (1 - rate) * math.log(1 - rate))
    assert aurc(c, ok) == pytest.approx(approx, abs=0.05)


def test_aurc_single_class():
    assert aurc([0.3, 0.2], [1, 1]) == 0.0 and eaurc([0.3, 0.2], [1, 1]) == 0.0
    assert aurc([0.3, 0.2], [0, 0]) == 100.0 and eaurc([0.3, 0.2], [0, 0]) == 0.0


# -------------------------------------------------------------- misclassification / OOD
def test_misclassification_hand():
    c, ok = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]
    assert sum(ok) == 3
    m = misclassification_metrics(c, ok)
    # correct {.9,.8,.6} vs wrong {.7,.5}: only (.6,.7) is lost -> 5/6
    assert m["auroc"] == pytest.approx(100 * 5 / 6)
    # success AP: R steps 1/3 @P1, 1/3 @P1, 1/3 @P3/4 -> 2/3 + 1/4 = 11/12
    assert m["aupr_success"] == pytest.approx(100 * 11 / 12)
    # error AP on -c: .5 err (P1,R1/2), .6 ok, .7 err (P2/3,R1) -> 1/2 + 1/3 = 5/6
    assert m["aupr_error"] == pytest.approx(100 * 5 / 6)
    # 95% of correct needs all 3 -> t=.6 -> errors >= .6: {.7} -> 1/2
    assert m["fpr95"] == pytest.approx(50.0)
    # risks 0, 0, 1/3, 1/4, 2/5 -> 59/300; optimal 0,0,0,1/4,2/5 -> 13/100
    assert m["aurc"] == pytest.approx(100 * 59 / 300)
    assert m["eaurc"] == pytest.approx(100 * (59 / 300 - 13 / 100))


@pytest.mark.parametrize("seed", SEEDS)
def test_misclassification_vs_sklearn(seed):
    c, ok = _random_case(seed)
    m = misclassification_metrics(c, ok)
    assert set(m) == {"auroc", "aupr_error", "aupr_success", "fpr95", "aurc", "eaurc", "augrc", "risk_cov90",
                      "cov_risk1"}
    np.testing.assert_allclose(m["auroc"], 100 * roc_auc_score(ok, c), rtol=1e-12)
    np.testing.assert_allclose(m["aupr_success"], 100 * average_precision_score(ok, c), rtol=1e-12)
    np.testing.assert_allclose(m["aupr_error"], 100 * average_precision_score(~ok, -c), rtol=1e-12)
    np.testing.assert_allclose(m["fpr95"], _sk_fpr(c, ok, 0.95), rtol=1e-12)
    np.testing.assert_allclose(m["aurc"], _brute_aurc(c, ok), rtol=1e-12)


def test_ood_hand():
    c_id, c_ood = [0.9, 0.7, 0.6], [0.8, 0.5]
    m = ood_metrics(c_id, c_ood)
    # ID vs OOD pairs: .9 beats both, .7 and .6 beat only .5 -> 4/6
    assert m["auroc"] == pytest.approx(100 * 4 / 6)
    # ranking .9i .8o .7i .6i .5o: AUPR-In = 1/3*1 + 1/3*2/3 + 1/3*3/4 = 29/36
    assert m["aupr_in"] == pytest.approx(100 * 29 / 36)
    # on -c: .5o (P1,R1/2), .6i, .7i, .8o (P2/4,R1) -> 1/2 + 1/4 = 3/4
    assert m["aupr_out"] == pytest.approx(75.0)
    # keep all 3 ID -> t=.6 -> OOD accepted: {.8} -> 1/2
    assert m["fpr95"] == pytest.approx(50.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_ood_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    c_id = np.round(rng.normal(1.0, 1.0, int(rng.integers(5, 200))), 1)
    c_ood = np.round(rng.normal(0.0, 1.0, int(rng.integers(5, 200))), 1)
    c = np.r_[c_id, c_ood]
    is_id = np.r_[np.ones(len(c_id), bool), np.zeros(len(c_ood), bool)]
    m = ood_metrics(c_id, c_ood)
    assert set(m) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    np.testing.assert_allclose(m["auroc"], 100 * roc_auc_score(is_id, c), rtol=1e-12)
    np.testing.assert_allclose(m["aupr_in"], 100 * average_precision_score(is_id, c), rtol=1e-12)
    np.testing.assert_allclose(m["aupr_out"], 100 * average_precision_score(~is_id, -c), rtol=1e-12)
    np.testing.assert_allclose(m["fpr95"], _sk_fpr(c, is_id, 0.95), rtol=1e-12)


# ------------------------------------------------------------------------- calibration
def test_ece_hand_edges():
    probs = np.array([
        [0.5, 0.3, 0.2, 0.0],      # conf .5 (edge) -> bin (.25,.5], correct
        [0.25, 0.25, 0.25, 0.25],  # conf .25 (edge) -> bin (0,.25], argmax 0, wrong
        [0.1, 0.8, 0.1, 0.0],      # conf .8 -> bin (.75,1], correct
        [0.6, 0.4, 0.0, 0.0],      # conf .6 -> bin (.5,.75], wrong
    ])
    labels = np.array([0, 3, 1, 1])
    assert np.linspace(0, 1, 5).tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert (probs.argmax(1) == labels).tolist() == [True, False, True, False]
    # one sample per bin: |0-.25| + |1-.5| + |0-.6| + |1-.8| = 1.55 -> /4 = .3875
    # (left-closed bins would merge .5 with .6 and give 13.75)
    assert ece(probs, labels, n_bins=4) == pytest.approx(38.75)


def test_ece_hand_default_bins():
    probs = np.array([[0.4, 0.35, 0.25], [0.41, 0.3, 0.29], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    assert np.linspace(0, 1, 16)[6] == 0.4  # .4 sits exactly on an edge of the 15 bins
    # .4 correct -> (5/15, 6/15]: gap .6; .41 wrong -> (6/15, 7/15]: gap .41;
    # 1.0 correct -> last bin: gap 0; conf 0 (argmax 0, correct) -> first bin: gap 1
    # ECE = (.6 + .41 + 0 + 1)/4 = .5025
    assert ece(probs, labels) == pytest.approx(50.25)


def test_nll_brier_accuracy_hand():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([0, 1, 0])
    # NLL: (ln 2 + ln 10 + ln 1e12)/3 = (0.693147 + 13*2.302585)/3 = 10.208918
    assert nll(probs, labels) == pytest.approx(10.208918, abs=1e-6)
    # Brier: (.25+.25) + (.81+.81) + (1+1) = 4.12 -> /3
    assert brier(probs, labels) == pytest.approx(4.12 / 3)
    # argmax (first index on ties) = [0, 0, 1] vs [0, 1, 0] -> 1/3
    assert accuracy(probs, labels) == pytest.approx(100 / 3)
    assert accuracy(np.array([0, 1, 1]), labels) == pytest.approx(200 / 3)


def test_classification_metrics_composition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 200)
    conf = probs.max(1)
    m = classification_metrics(probs, labels, conf)
    assert list(m) == ["accuracy", "ece", "nll", "brier", "ece_adaptive", "ece_classwise", "mce",
                       "brier_rel", "brier_res", "brier_unc", "auroc", "aupr_error",
                       "aupr_success", "fpr95", "aurc", "eaurc", "augrc", "risk_cov90", "cov_risk1"]
    ok = probs.argmax(1) == labels
    assert 0 < ok.sum() < len(ok)
    assert m["accuracy"] == pytest.approx(100 * ok.mean())
    assert m["ece"] == pytest.approx(ece(probs, labels))
    assert m["nll"] == pytest.approx(nll(probs, labels))
    assert m["brier"] == pytest.approx(brier(probs, labels))
    assert m["ece_adaptive"] == pytest.approx(adaptive_ece(probs, labels))
    assert m["ece_classwise"] == pytest.approx(classwise_ece(probs, labels))
    assert m["mce"] == pytest.approx(mce(probs, labels))
    assert m["brier_rel"] == pytest.approx(brier_decomposition(probs, labels)["rel"])
    for k, v in misclassification_metrics(conf, ok).items():
        assert m[k] == pytest.approx(v)


# ------------------------------------------------------------------------- error paths
@pytest.mark.parametrize("fn", [auroc, average_precision, fpr_at_tpr, aurc, eaurc, augrc, risk_at_coverage,
                                coverage_at_risk, misclassification_metrics])
def test_errors_binary_metrics(fn):
    with pytest.raises(ValueError, match="length"):
        fn([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.1, np.nan, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.1, np.inf, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        fn([0.1, 0.2, 0.3], [1, 2, 0])


def test_errors_other():
    with pytest.raises(ValueError, match="conf_ood"):
        ood_metrics([0.1, 0.2], [])
    with pytest.raises(ValueError, match="conf_id"):
        ood_metrics([np.nan], [0.2])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([0.1, 0.2], [1, 0], tpr=0.0)
    good = np.array([[0.7, 0.3], [0.2, 0.8]])
    for fn in (ece, nll, brier, accuracy, adaptive_ece, classwise_ece, mce, brier_decomposition):
        with pytest.raises(ValueError, match="labels"):
            fn(good, np.array([0, 1, 1]))
        with pytest.raises(ValueError, match="probs"):
            fn(np.array([[0.5, np.nan], [0.2, 0.8]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        nll(good, np.array([0, 2]))
    with pytest.raises(ValueError, match="confidence"):
        classification_metrics(good, np.array([0, 1]), [0.7, np.nan])
    with pytest.raises(ValueError, match="confidence"):
        classification_metrics(good, np.array([0, 1]), [0.7])


def test_single_class_returns_nan():
    s = [0.9, 0.4, 0.4]
    for p in ([1, 1, 1], [0, 0, 0]):
        assert math.isnan(auroc(s, p))
        assert math.isnan(average_precision(s, p))
        assert math.isnan(fpr_at_tpr(s, p))
    m = misclassification_metrics(s, [True, True, True])  # perfect classifier
    assert all(math.isnan(m[k]) for k in ("auroc", "aupr_error", "aupr_success", "fpr95"))
    assert m["aurc"] == 0.0 and m["eaurc"] == 0.0
    assert m["augrc"] == 0.0 and m["risk_cov90"] == 0.0 and m["cov_risk1"] == 100.0


# ---------------------------------------------------------- generalized / selective risk
def _brute_augrc(conf, ok):
    # Per sample: generalized risk = (errors with c >= c_i) / n (a tie group shares it); mean over samples.
    return 100.0 * np.mean([np.sum(~ok[conf >= c]) / conf.size for c in conf])


def _brute_risk_at_coverage(conf, ok, cov):
    # the largest threshold accepting >= cov of all samples; error rate among the accepted
    t = max(c for c in np.unique(conf) if np.mean(conf >= c) >= cov)
    return 100.0 * np.mean(~ok[conf >= t])


def _brute_coverage_at_risk(conf, ok, risk):
    covs = [np.mean(conf >= c) for c in np.unique(conf) if np.mean(~ok[conf >= c]) <= risk + 1e-12]
    return 100.0 * max(covs, default=0.0)


def test_augrc_hand():
    c, ok = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    # accepted-and-wrong counts at k = 1..4: 0, 1, 1, 2 -> mean of count / 4 = (0 + 1 + 1 + 2) / 16 = 1/4
    assert augrc(c, ok) == pytest.approx(25.0)
    # ties: {.9}: 0 errors (1 position); {.5, .5}: 1 error, 2 positions; {.1}: 2 -> (0 + 1 + 1 + 2) / 16
    assert augrc([0.9, 0.5, 0.5, 0.1], ok) == pytest.approx(25.0)
    # errors first: 1, 2, 2, 2 -> 7/16; correct first: 0, 0, 1, 2 -> 3/16
    assert augrc(c, [0, 0, 1, 1]) == pytest.approx(100 * 7 / 16)
    assert augrc(c, [1, 1, 0, 0]) == pytest.approx(100 * 3 / 16)
    # all wrong: 1, 2 -> 3/4 (the maximum, (n + 1) / 2n, not 100)
    assert augrc([0.3, 0.2], [1, 1]) == 0.0 and augrc([0.3, 0.2], [0, 0]) == pytest.approx(75.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_augrc_vs_bruteforce_and_traub_identity(seed):
    c, ok = _random_case(seed)
    np.testing.assert_allclose(augrc(c, ok), _brute_augrc(c, ok), rtol=1e-12)
    perm = np.random.default_rng(200 + seed).permutation(len(c))
    np.testing.assert_allclose(augrc(c[perm], ok[perm]), augrc(c, ok), rtol=1e-12)
    # Traub et al. (2024): AUGRC = acc * r * (1 - AUROC) + r^2 / 2 for r the error rate (continuous form); for n
    # samples without ties, summing over positions adds exactly r / (2n): each error counts itself once more.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    ok2 = rng.random(n) < 0.8
    ok2[0], ok2[1] = True, False
    c2 = rng.permutation(n) + ok2 * rng.uniform(0, n / 2)  # distinct, informative scores
    assert len(np.unique(c2)) == n
    r, a = np.mean(~ok2), auroc(c2, ok2) / 100
    np.testing.assert_allclose(augrc(c2, ok2), 100 * ((1 - r) * r * (1 - a) + r * r / 2 + r / (2 * n)), rtol=1e-12)


def test_risk_at_coverage_hand():
    c, ok = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]
    # 60% of 5 = 3 accepted {.9, .8, .7}: 1 error -> 1/3; 50% needs 2.5 -> 3 as well; 40% -> 2, no error; 100%: 2/5
    assert risk_at_coverage(c, ok, 0.6) == pytest.approx(100 / 3)
    assert risk_at_coverage(c, ok, 0.5) == pytest.approx(100 / 3)
    assert risk_at_coverage(c, ok, 0.4) == pytest.approx(0.0)
    assert risk_at_coverage(c, ok, 1.0) == pytest.approx(40.0)
    # a tie group is accepted whole: 50% of 4 needs 2, the tie {.5, .5} takes 3 (1 error) -> 1/3
    assert risk_at_coverage([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0], 0.5) == pytest.approx(100 / 3)


def test_coverage_at_risk_hand():
    c, ok = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]
    # (coverage, selective risk) per threshold: (.2, 0), (.4, 0), (.6, 1/3), (.8, 1/4), (1, 2/5)
    assert coverage_at_risk(c, ok, 0.25) == pytest.approx(80.0)
    assert coverage_at_risk(c, ok, 0.01) == pytest.approx(40.0)
    assert coverage_at_risk(c, ok, 0.4) == pytest.approx(100.0)
    assert coverage_at_risk(c, [0, 0, 0, 0, 0], 0.01) == 0.0  # no threshold reaches it


@pytest.mark.parametrize("seed", SEEDS)
def test_selective_risk_vs_bruteforce(seed):
    c, ok = _random_case(seed)
    for cov in (0.1, 0.5, 0.9, 1.0):
        np.testing.assert_allclose(risk_at_coverage(c, ok, cov), _brute_risk_at_coverage(c, ok, cov), rtol=1e-12)
    for risk in (0.0, 0.01, 0.2, 0.5):
        np.testing.assert_allclose(coverage_at_risk(c, ok, risk), _brute_coverage_at_risk(c, ok, risk), rtol=1e-12)


# ----------------------------------------------------------- more calibration metrics
def test_mce_hand():
    # the bins of test_ece_hand_edges: one sample each with gaps .25, .5, .6, .2 -> the largest, .6
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.8, 0.1, 0.0], [0.6, 0.4, 0.0, 0.0]])
    assert mce(probs, np.array([0, 3, 1, 1]), n_bins=4) == pytest.approx(60.0)
    # test_ece_hand_default_bins' case: gaps .6, .41, 0, 1 -> 1
    probs = np.array([[0.4, 0.35, 0.25], [0.41, 0.3, 0.29], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert mce(probs, np.array([0, 1, 1, 0])) == pytest.approx(100.0)


def test_adaptive_ece_hand():
    # confidences (given out of order) .9 wrong, .55 wrong, .8 right, .6 right; 2 equal-mass bins after sorting:
    # {.55 wrong, .6 right}: |1 - 1.15| = .15; {.8 right, .9 wrong}: |1 - 1.7| = .7 -> (.15 + .7) / 4 = .2125
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([1, 0, 1, 0])
    assert (probs.argmax(1) == labels).tolist() == [False, False, True, True]
    assert adaptive_ece(probs, labels, n_bins=2) == pytest.approx(21.25)
    # equal-width bins put .55 and .6 into (.5, 1] with the others when n_bins = 2: |2 - 2.85| / 4 = .2125 too,
    # so the 4-bin split tells them apart: equal mass {.55}, {.6}, {.8}, {.9} -> (.55 + .4 + .2 + .9) / 4 = .5125
    assert adaptive_ece(probs, labels, n_bins=4) == pytest.approx(51.25)


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptive_ece_vs_bruteforce(seed):
    rng = np.random.default_rng(seed)
    n, bins = int(rng.integers(30, 300)), int(rng.integers(1, 20))
    logits = rng.normal(size=(n, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, n)
    conf, hit = probs.max(1), probs.argmax(1) == labels
    order = np.argsort(conf)
    # bin b holds sorted positions [floor(b n / B) .. ) up to rounding: np.array_split gives the first n % B bins
    # one extra sample; written out with explicit boundaries
    sizes = [n // bins + (1 if b < n % bins else 0) for b in range(bins)]
    edges = np.r_[0, np.cumsum(sizes)]
    gap = sum(abs(hit[order[lo:hi]].mean() - conf[order[lo:hi]].mean()) * (hi - lo) for lo, hi in zip(edges, edges[1:]))
    np.testing.assert_allclose(adaptive_ece(probs, labels, bins), 100 * gap / n, rtol=1e-10)


def test_classwise_ece_hand():
    # 2 bins (0, .5], (.5, 1], labels (0, 0). class 0: p = .6 (y 1) -> .4, .2 (y 1) -> .8: (.4 + .8) / 2 = .6;
    # class 1: .3 and .2 share the first bin, y 0 both: |0 - .5| / 2 = .25; class 2: .1 -> .1, .6 -> .6: .35.
    # mean (.6 + .25 + .35) / 3 = .4
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    assert classwise_ece(probs, np.array([0, 0]), n_bins=2) == pytest.approx(40.0)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_classwise_ece_vs_bruteforce(seed):
    rng = np.random.default_rng(seed)
    n, c, bins = 200, 5, 15
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, c, n)
    total = 0.0
    for k in range(c):
        for b in range(bins):  # right-closed (b/B, (b+1)/B], 0 into the first
            lo, hi = b / bins, (b + 1) / bins
            inside = (probs[:, k] > lo) & (probs[:, k] <= hi) | ((b == 0) & (probs[:, k] == 0))
            if inside.any():
                total += abs((labels[inside] == k).mean() - probs[inside, k].mean()) * inside.sum() / n
    np.testing.assert_allclose(classwise_ece(probs, labels), 100 * total / c, rtol=1e-10)


def test_brier_decomposition_hand():
    # 4 bins; confidences .6, .6 (bin (.5, .75]: one right, one wrong -> o_b = 1/2) and .9, .9 (both right -> 1);
    # o = 3/4. rel = 1/2 (.6 - .5)^2 + 1/2 (.9 - 1)^2 = .01; res = 1/2 (1/2 - 3/4)^2 + 1/2 (1 - 3/4)^2 = .0625;
    # unc = 3/4 * 1/4 = .1875. Check: mean (c - o)^2 = (.16 + .36 + .01 + .01) / 4 = .135 = .01 - .0625 + .1875
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])
    d = brier_decomposition(probs, labels, n_bins=4)
    assert d == pytest.approx({"rel": 0.01, "res": 0.0625, "unc": 0.1875})


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_brier_decomposition_identity(seed):
    # when every bin holds one confidence value, rel - res + unc is exactly the top-label Brier score
    rng = np.random.default_rng(seed)
    n = 300
    conf = rng.choice([0.55, 0.7, 0.85, 0.9, 1.0], n)  # one per 15-bin: (8/15, 9/15], ..., (13/15, 14/15], last
    probs = np.stack([conf, 1 - conf], 1)
    hit = rng.random(n) < conf
    labels = np.where(hit, 0, 1)
    d = brier_decomposition(probs, labels)
    np.testing.assert_allclose(d["rel"] - d["res"] + d["unc"], np.mean((conf - hit) ** 2), atol=1e-12)
