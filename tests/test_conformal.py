"""Split-conformal sets and SGR (bench/conformal.py): quantiles and scores computed by hand, LAC and APS against MAPIE
1.6.0 (constants printed by tools/conformal_mapie_reference.py in its own venv), the finite-sample coverage bound by
simulation, and SGR's binary search traced by hand with the binomial bound solved independently."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from bench import conformal as cp

# the constructed case of tools/conformal_mapie_reference.py (integer weights -> probabilities)
CAL_W = [[9, 3, 1, 1], [2, 8, 1, 3], [1, 1, 6, 2], [5, 4, 1, 2], [1, 2, 3, 9], [7, 1, 1, 1], [3, 5, 2, 2],
         [1, 1, 1, 7], [5, 2, 6, 1], [2, 3, 4, 1], [8, 1, 3, 1], [1, 9, 1, 1], [3, 1, 7, 4], [2, 6, 5, 1],
         [6, 1, 2, 5], [1, 3, 1, 5], [4, 2, 9, 1], [6, 5, 1, 2], [1, 1, 4, 8]]
CAL_Y = [0, 1, 2, 1, 3, 0, 2, 3, 0, 3, 2, 1, 2, 2, 3, 1, 2, 0, 2]
TEST_W = [[6, 2, 1, 1], [1, 1, 5, 3], [3, 3, 3, 1], [1, 7, 1, 1], [2, 1, 1, 2], [4, 1, 5, 1], [1, 2, 1, 8],
          [5, 4, 1, 1]]
# MAPIE 1.6.0 SplitConformalClassifier(conformity_score="lac", prefit=True): confidence level -> (qhat, sets)
MAPIE_LAC = {
    0.9: (0.8333333333333334, [[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0],
                               [0, 1, 0, 1], [1, 1, 0, 0]]),
    0.8: (0.7142857142857143, [[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1], [1, 0, 1, 0],
                               [0, 0, 0, 1], [1, 1, 0, 0]]),
}
# MAPIE 1.6.0 APSConformityScore.get_true_label_cumsum_proba: the probability mass down to and including the true label
MAPIE_APS = [0.642857142857, 0.571428571429, 0.6, 0.75, 0.6, 0.7, 0.833333333333, 0.7, 0.785714285714, 1.0,
             0.846153846154, 0.75, 0.466666666667, 0.785714285714, 0.785714285714, 0.8, 0.5625, 0.428571428571,
             0.857142857143]


def probs(w):
    w = np.asarray(w, dtype=float)
    return w / w.sum(1, keepdims=True)


def test_quantile_is_the_ceiling_order_statistic_by_hand():
    s = np.arange(1.0, 20.0)[::-1].copy()  # 19 scores 19..1, unsorted on purpose
    assert cp.conformal_quantile(s, 0.1) == 18.0  # k = ceil(20 * 0.9) = 18
    assert cp.conformal_quantile(s, 0.05) == 19.0  # k = ceil(20 * 0.95) = 19 (19.000000000000004 in floats)
    assert cp.conformal_quantile(s, 0.5) == 10.0  # k = ceil(20 * 0.5) = 10
    assert cp.conformal_quantile(np.arange(9.0), 0.05) == math.inf  # k = ceil(9.5) = 10 > 9: every class
    rng = np.random.default_rng(0)
    for n in (7, 50, 333):  # numpy's "lower" quantile at level ceil((n+1)(1-alpha))/n (MAPIE's form)
        x = rng.normal(size=n)
        for a in (0.1, 0.05, 0.2):
            level = math.ceil((n + 1) * (1 - a) - 1e-9) / n
            want = np.quantile(x, level, method="lower") if level <= 1 else math.inf
            assert cp.conformal_quantile(x, a) == want


def test_lac_matches_mapie():
    cal, test = probs(CAL_W), probs(TEST_W)
    for level, (qhat, sets) in MAPIE_LAC.items():
        c = cp.SplitConformal.calibrate(cal, CAL_Y, score="lac", alpha=round(1 - level, 10))
        assert c.qhat == pytest.approx(qhat, abs=1e-12)
        np.testing.assert_array_equal(c.sets(test).astype(int), sets)


def test_aps_scores_match_mapie_and_lac_by_hand():
    cal = probs(CAL_W)
    np.testing.assert_allclose(cp.conformity_scores(cal, CAL_Y, "aps"), MAPIE_APS, atol=1e-11)
    # LAC by hand on the first image: 1 - 9/14
    assert cp.conformity_scores(cal[:1], [0], "lac")[0] == pytest.approx(5 / 14)


def test_raps_scores_by_hand():
    p = np.array([[0.15, 0.5, 0.05, 0.3]])  # ranks: class 1, 3, 0, 2
    s = cp.class_scores(p, "raps", k_reg=1, lam=0.1)
    # mass down to the class + 0.1 * (rank - 1)^+: 0.95 + 0.2, 0.5, 1.0 + 0.3, 0.8 + 0.1
    np.testing.assert_allclose(s, [[1.15, 0.5, 1.3, 0.9]])
    np.testing.assert_allclose(cp.class_scores(p, "aps"), [[0.95, 0.5, 1.0, 0.8]])
    np.testing.assert_array_equal(cp.prediction_sets(p, 0.9, "raps", k_reg=1, lam=0.1), [[False, True, False, True]])
    # randomised: the class's own mass times u, u the seed's first uniform draw
    u = np.random.default_rng(7).uniform(size=1)[0]
    r = cp.class_scores(p, "raps", k_reg=1, lam=0.1, randomized=True, seed=7)
    np.testing.assert_allclose(r, [[0.8 + u * 0.15 + 0.2, u * 0.5, 0.95 + u * 0.05 + 0.3, 0.5 + u * 0.3 + 0.1]])


def test_coverage_and_size_by_hand():
    sets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    assert cp.coverage(sets, [0, 2, 1, 2]) == 50.0  # the first and last hold their label
    assert cp.mean_set_size(sets) == 1.5
    assert cp.coverage_bounds(19, 0.1) == pytest.approx((90.0, 95.0))  # 18/20 and 0.9 + 1/20
    assert cp.coverage_bounds(6000, 0.05) == pytest.approx((100 * 5701 / 6001, 100 * (0.95 + 1 / 6001)))
    assert cp.coverage_bounds(9, 0.05) == (100.0, 100.0)


@pytest.mark.parametrize("score", cp.SCORES)
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_finite_sample_coverage_holds_on_exchangeable_data(score, alpha):
    """Labels drawn from the model's own probabilities (so calibration and test are exchangeable): the coverage
    averaged over many calibration draws lies within the bounds k/(n+1) and 1 - alpha + 1/(n+1), up to 4 standard
    errors. Randomised scores have no ties, so the upper bound holds too."""
    rng = np.random.default_rng(1)
    n, n_test, trials = 19, 40, 1500
    hits = []
    for t in range(trials):
        p = rng.dirichlet(np.ones(5), size=n + n_test)
        y = (p.cumsum(1) > rng.uniform(size=(len(p), 1))).argmax(1)
        c = cp.SplitConformal.calibrate(p[:n], y[:n], score=score, alpha=alpha, randomized=True, seed=t)
        hits.append(c.sets(p[n:], seed=10_000 + t)[np.arange(n_test), y[n:]].mean())
    lo, hi = cp.coverage_bounds(n, alpha)
    se = 100 * np.std(hits) / np.sqrt(trials)
    assert lo - 4 * se <= 100 * np.mean(hits) <= hi + 4 * se


def test_sets_hold_every_class_when_alpha_is_too_small_for_n():
    c = cp.SplitConformal.calibrate(probs(CAL_W), CAL_Y, score="aps", alpha=0.01)  # k = ceil(19.8) = 20 > 19
    assert c.qhat == math.inf and c.sets(probs(TEST_W)).all()


def _bound(errors, m, d):
    """The b with P(Bin(m, b) <= errors) = d, solved from the binomial sum itself (independent of scipy.stats)."""
    return brentq(lambda b: sum(math.comb(m, j) * b**j * (1 - b) ** (m - j) for j in range(errors + 1)) - d,
                  1e-12, 1 - 1e-12)


def test_sgr_binary_search_traced_by_hand():
    """8 images, confidences 0.1..0.8, the two least confident wrong; delta 0.3 over ceil(log2 8) = 3 tests -> 0.1
    each. z = 5: 4 accepted, 0 errors, bound 1 - 0.1^(1/4) = 0.438; z = 3: 6 accepted, bound 1 - 0.1^(1/6) = 0.319;
    z = 2: 7 accepted, 1 error, bound 0.453 (solves (1-b)^7 + 7b(1-b)^6 = 0.1)."""
    conf = np.array([0.4, 0.1, 0.8, 0.3, 0.6, 0.2, 0.7, 0.5])  # shuffled
    correct = conf > 0.25
    assert _bound(0, 4, 0.1) == pytest.approx(1 - 0.1 ** 0.25)
    r = cp.sgr(conf, correct, target_risk=0.5, delta=0.3)
    assert r.threshold == 0.2 and r.calib_coverage == 7 / 8 and r.calib_risk == pytest.approx(1 / 7)
    assert r.bound == pytest.approx(_bound(1, 7, 0.1), abs=1e-9) and r.bound == pytest.approx(0.45256, abs=1e-5)
    # target 0.45: the last test (0.453) fails, so the answer is the most covering one that passed (z = 3), not the
    # last tested one as in the paper's pseudo-code
    r = cp.sgr(conf, correct, target_risk=0.45, delta=0.3)
    assert r.threshold == 0.3 and r.calib_coverage == 6 / 8 and r.bound == pytest.approx(1 - 0.1 ** (1 / 6))
    # nothing meets 0.2: rejected all
    r = cp.sgr(conf, correct, target_risk=0.2, delta=0.3)
    assert r.threshold == math.inf and math.isnan(r.bound) and r.calib_coverage == 0.0
    assert cp.selective_outcome(r, conf, correct)[1] == 0.0
    assert math.isnan(cp.selective_outcome(r, conf, correct)[0])


def test_sgr_outcome_on_test_images_by_hand():
    r = cp.SGRResult(threshold=0.5, bound=0.1, calib_risk=0.0, calib_coverage=1.0, target=0.2, delta=0.01)
    # accepted: 0.5, 0.9, 0.7 (one of them wrong) of 5
    risk, cov = cp.selective_outcome(r, [0.5, 0.1, 0.9, 0.7, 0.3], [True, False, False, True, True])
    assert risk == pytest.approx(100 / 3) and cov == 60.0


def test_sgr_ties_are_accepted_together():
    conf = np.array([0.5] * 6 + [0.9] * 10)
    r = cp.sgr(conf, np.ones(16, dtype=bool), target_risk=0.5, delta=0.5)
    assert r.threshold == 0.5 and r.calib_coverage == 1.0


def test_guarantee_metrics_rows():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(10) * 0.1, size=4000)
    y = p.argmax(1)
    low = np.argsort(p.max(1))[:200]  # 5% errors, on the least confident images
    y[low] = (y[low] + 1) % 10
    n = 3000  # SGR's first test accepts the top half: 1,500 images without an error bound the risk by ~0.7% < 2%
    out = cp.guarantee_metrics(p[:n], y[:n], p[:n].max(1), p[n:], y[n:], p[n:].max(1))
    assert list(out) == cp.metric_names()
    assert out["cp_lac_size95"] >= out["cp_lac_size90"]  # a smaller alpha never shrinks a set
    assert out["cp_aps_cov95"] >= out["cp_aps_cov90"]
    assert 50 <= out["sgr_coverage"] <= 100 and out["sgr_bound"] < 100 * cp.SGR_RISK
    assert out["sgr_risk"] < 2 * 100 * cp.SGR_RISK


@pytest.mark.parametrize("call, match", [
    (lambda: cp.conformal_quantile([0.1, 0.2], 1.5), "alpha"),
    (lambda: cp.conformal_quantile([], 0.1), "scores"),
    (lambda: cp.class_scores([[0.5, 0.5]], "thr"), "score"),
    (lambda: cp.class_scores([0.5, 0.5]), "probs"),
    (lambda: cp.conformity_scores([[0.5, 0.5]], [2]), "labels"),
    (lambda: cp.sgr([0.1, 0.2], [1, 2]), "correct"),
    (lambda: cp.sgr([0.1, 0.2], [1, 0], target_risk=0), "target_risk"),
])
def test_bad_input_is_one_line_naming_it(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- a real (tiny) run
def test_run_calibrates_on_the_validation_split_and_adds_guarantee_rows(tmp_path):
    """``--set eval.conformal=true``: a ``calibration`` cell (no rows) holds the outputs of the method's own
    validation split; every labelled set's rows equal guarantee_metrics recomputed from the stored arrays, OOD sets
    get none; a resumed run recalibrates a lost cell from the stored calibration cell, to the same values."""
    import csv

    from _tiny import tiny
    from bench.datasets.source import embedded
    from bench.datasets.splits import SplitSpec, split
    from bench.run.store import RunStore, cell_key

    run, cache = tmp_path / "run", tmp_path / "cache"
    code, _, err = tiny(run, cache, "--set", "eval.conformal=true")
    assert code == 0, err
    store = RunStore(run)
    _, val = split(embedded("mnist").part("train"), SplitSpec(0.1, 0, 1, 0, 256, data="mnist-train"))
    with open(run / "results.csv") as f:
        table = {(r["method"], r["seed"], r["eval_set"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    assert not any(k[2] == "calibration" for k in table)
    for method in ("msp", "energy"):
        for seed in (0, 1):
            cal = store.read_arrays(cell_key(method, seed, 0, "calibration"))
            np.testing.assert_array_equal(cal["labels"], val.labels.numpy())  # 6,000 images, never a test image
            test = store.read_arrays(cell_key(method, seed, 0, "mnist"))
            want = cp.guarantee_metrics(cal["probs"], cal["labels"], cal["confidence"], test["probs"],
                                        test["labels"], test["confidence"])
            got = {m: table[(method, str(seed), "mnist", m)] for m in cp.metric_names()}
            np.testing.assert_allclose([got[m] for m in want], list(want.values()), equal_nan=True)
            assert not any(k[2] == "ood:uniform" and k[3].startswith(("cp_", "sgr_")) for k in table)
    # the saved-outputs path: bench score of the stored cells, calibrated on the stored calibration cell, gives the
    # run's rows; its run directory reports as a guarantees table
    from _tiny import run_main

    pred = run / "predictions"
    code, _, err = run_main(["score", str(pred / f"{cell_key('energy', 1, 0, 'mnist')}.npz"), "--calibration",
                             str(pred / f"{cell_key('energy', 1, 0, 'calibration')}.npz"), "--name", "mnist",
                             "--method", "energy", "--out", str(tmp_path / "scored")])
    assert code == 0, err
    with open(tmp_path / "scored" / "results.csv") as f:
        scored = {r["metric"]: float(r["value"]) for r in csv.DictReader(f) if r["eval_set"] == "mnist"}
    np.testing.assert_allclose([scored[m] for m in cp.metric_names()],
                               [table[("energy", "1", "mnist", m)] for m in cp.metric_names()], equal_nan=True)
    code, out, err = run_main(["report", str(tmp_path / "scored"), "--groups", "guarantees,failure"])
    assert code == 0 and "LAC cov90" in out and "AUGRC" in out, err

    key = cell_key("msp", 0, 0, "mnist")
    before = store.read_cell(store.cells / f"{key}.json")
    (store.cells / f"{key}.json").unlink()
    code, _, err = tiny(run, cache, "--set", "eval.conformal=true", "--resume")
    assert code == 0, err
    after = store.read_cell(store.cells / f"{key}.json")
    pick = [(r["metric"], r["value"]) for r in before if r["metric"].startswith(("cp_", "sgr_"))]
    assert pick
    np.testing.assert_equal(pick, [(r["metric"], r["value"]) for r in after if r["metric"].startswith(("cp_", "sgr_"))])


def test_score_api_calibration_and_bad_calibration():
    import bench
    from bench.errors import UsageError

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(700, 10)) * 4
    y = logits.argmax(1)
    y[:40] = (y[:40] + 3) % 10
    rows = bench.score(logits[200:], y[200:], calibration=(logits[:200], y[:200]))
    got = dict(zip(rows["metric"], rows["value"]))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = cp.guarantee_metrics(p[:200], y[:200], p[:200].max(1), p[200:], y[200:], p[200:].max(1))
    np.testing.assert_allclose([got[m] for m in want], list(want.values()), rtol=1e-5, equal_nan=True)
    assert "cp_lac_cov90" not in set(bench.score(logits, y)["metric"])  # none without a calibration set
    with pytest.raises(UsageError, match="calibration has 5 classes"):
        bench.score(logits, y, calibration=(logits[:, :5], y % 5))
    with pytest.raises(UsageError, match="confidence was given for some sets but not for calibration"):
        bench.score(logits, y, confidence=p.max(1), calibration=(logits, y))
    with pytest.raises(UsageError, match="calibration must be"):
        bench.score(logits, y, calibration=logits)


def test_runs_written_before_eval_conformal_read_as_without_it():
    """A manifest without the key (every run before it existed) has the same result config as conformal=false, so
    it can still be resumed and reported with new runs; conformal=true differs."""
    from bench.run.result_keys import result_config

    old = {"profile": "quick", "eval": {"max_eval": 0, "batch_size": 2048, "cost_images": 2000}}
    assert result_config(old) == result_config({**old, "eval": {**old["eval"], "conformal": False}})
    assert result_config(old) != result_config({**old, "eval": {**old["eval"], "conformal": True}})


def test_bench_evaluate_of_a_user_model_calibrates_too(tmp_path):
    """``bench.evaluate(..., options={"eval.conformal": True})``: the user model's cells get a calibration cell and
    guarantee rows equal to the functions on the stored arrays."""
    import torch
    from torch import nn

    import bench
    from bench.run.store import RunStore, cell_key

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    rows = bench.evaluate(model, methods=["msp"], datasets=["mnist"], device="cpu", out=str(tmp_path / "run"),
                          profile="smoke", names=["mine"], progress=False,
                          options={"eval.max_eval": 200, "eval.conformal": True, "eval.cost_images": 64})
    store = RunStore(tmp_path / "run")
    cal = store.read_arrays(cell_key("msp@mine", 0, 0, "calibration"))
    test = store.read_arrays(cell_key("msp@mine", 0, 0, "mnist"))
    want = cp.guarantee_metrics(cal["probs"], cal["labels"], cal["confidence"], test["probs"], test["labels"],
                                test["confidence"])
    got = rows[rows["eval_set"] == "mnist"].set_index("metric")["value"]
    np.testing.assert_allclose([got[m] for m in want], list(want.values()), equal_nan=True)
    assert len(cal["labels"]) == 6000
