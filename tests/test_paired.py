"""Per-image paired tests (bench/report/paired.py) on hand-computed, brute-force and simulated cases, and ``bench report
--versus`` (bench/report/versus.py) on a synthetic run whose predictions are built here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import combine_pvalues, norm
from sklearn.metrics import roc_auc_score

from bench.report.paired import (
    bootstrap_auroc_difference,
    combine,
    delong,
    misclassification_difference,
    ood_difference,
    paired_bootstrap,
    z_test,
)


# ------------------------------------------------------------------------------------------------ DeLong
def test_delong_identical_scores_give_no_difference():
    rng = np.random.default_rng(1)
    s, pos = rng.normal(size=200), rng.integers(0, 2, 200)
    r = delong(s, s.copy(), pos)
    assert (r.diff, r.se, r.z, r.p) == (0.0, 0.0, 0.0, 1.0)


def test_delong_by_hand():
    # a: positives 3, 1; negatives 2, 0 -> psi rows (3: beats both = 1), (1: beats 0 only = 1/2); AUC 3/4.
    # b: positives 5, 4; negatives 0, 1 -> every component 1; AUC 1.
    # components a - b: V10 = (0, -1/2), V01 = (-1/2, 0); each has sample variance 1/8 (ddof 1)
    # Var = 1/8 / 2 + 1/8 / 2 = 1/8; diff = -1/4 -> z = -0.25 / sqrt(1/8) = -1/sqrt(2)
    r = delong([3, 1, 2, 0], [5, 4, 0, 1], [1, 1, 0, 0])
    assert r.diff == pytest.approx(-25.0)
    assert r.se == pytest.approx(100 * math.sqrt(1 / 8))
    assert r.z == pytest.approx(-1 / math.sqrt(2))
    assert r.p == pytest.approx(2 * norm.sf(1 / math.sqrt(2)))
    assert (r.n_pos, r.n_neg) == (2, 2)


def _brute_force_delong(a, b, pos):
    """DeLong's variance straight from its definition: the m x n matrix psi(x_i, y_j) of each method."""
    pos = np.asarray(pos, bool)
    comps10, comps01, aucs = [], [], []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        x, y = s[pos][:, None], s[~pos][None, :]
        psi = (x > y) + 0.5 * (x == y)
        comps10.append(psi.mean(axis=1))
        comps01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    d10, d01 = comps10[0] - comps10[1], comps01[0] - comps01[1]
    var = d10.var(ddof=1) / d10.size + d01.var(ddof=1) / d01.size
    return 100 * (aucs[0] - aucs[1]), 100 * math.sqrt(var)


def test_delong_matches_brute_force_and_sklearn_with_ties():
    rng = np.random.default_rng(7)
    pos = rng.integers(0, 2, 60)
    a = rng.integers(0, 6, 60) + pos  # integer scores: many ties
    b = rng.integers(0, 4, 60) + 2 * pos
    r = delong(a, b, pos)
    diff, se = _brute_force_delong(a, b, pos)
    assert r.diff == pytest.approx(diff, abs=1e-10)
    assert r.se == pytest.approx(se, rel=1e-10)
    assert r.diff == pytest.approx(100 * (roc_auc_score(pos, a) - roc_auc_score(pos, b)), abs=1e-10)


def test_delong_variance_agrees_with_a_paired_bootstrap():
    rng = np.random.default_rng(3)
    pos = rng.random(2000) < 0.5
    shared = rng.normal(size=2000)
    a, b = 1.0 * pos + shared, 0.8 * pos + 0.7 * shared + 0.7 * rng.normal(size=2000)
    r = delong(a, b, pos)
    boot = bootstrap_auroc_difference(a, pos, b, pos, strata=pos, n_boot=1000, seed=0)
    assert boot.diff == pytest.approx(r.diff, abs=1e-9)  # same statistic on the observed sample
    assert boot.se == pytest.approx(r.se, rel=0.1)  # two estimates of one standard error


def test_delong_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong([1, 2, 3], [1, 2, 3], [1, 0, 0])
    with pytest.raises(ValueError, match="scores_b"):
        delong([1, 2, 3, 4], [1, 2, 3], [1, 1, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        delong([1, np.nan, 3, 4], [1, 2, 3, 4], [1, 1, 0, 0])


# --------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_se_of_a_mean_difference_matches_its_closed_form():
    # the bootstrap variance of a mean is exactly sigma^2 / n with sigma^2 the ddof-0 variance of the sample
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=400), rng.normal(size=400)
    d = x - y

    def stat(idx):
        return x[idx].mean(axis=1) - y[idx].mean(axis=1)

    r = paired_bootstrap(stat, np.zeros(400), n_boot=4000, seed=1)
    assert r.diff == pytest.approx(d.mean())
    assert r.se == pytest.approx(d.std() / math.sqrt(400), rel=0.04)
    # and an independent implementation: scipy's paired percentile bootstrap
    from scipy.stats import bootstrap

    ref = bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), paired=True,
                    n_resamples=4000, method="percentile", random_state=2)
    assert r.se == pytest.approx(ref.standard_error, rel=0.06)
    assert r.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.25 * r.se)
    assert r.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.25 * r.se)


def test_bootstrap_identical_methods_give_p_one_and_is_seeded():
    rng = np.random.default_rng(0)
    c, right = rng.random(300), rng.random(300) < 0.8
    r = bootstrap_auroc_difference(c, right, c, right, n_boot=200, seed=4)
    assert (r.diff, r.se, r.p) == (0.0, 0.0, 1.0)
    other = rng.random(300)
    one = bootstrap_auroc_difference(c, right, other, right, n_boot=200, seed=4)
    two = bootstrap_auroc_difference(c, right, other, right, n_boot=200, seed=4)
    three = bootstrap_auroc_difference(c, right, other, right, n_boot=200, seed=5)
    assert one == two and one.se != three.se


def test_resampled_auroc_equals_sklearn_on_the_drawn_images():
    from bench.report.paired import _AurocOnResamples, _counts

    rng = np.random.default_rng(9)
    s, pos = rng.integers(0, 5, 40).astype(float), rng.random(40) < 0.6  # ties within and across classes
    idx = rng.integers(0, 40, size=(5, 40))
    fast = _AurocOnResamples(s, pos)(_counts(idx))
    for row, value in zip(idx, fast):
        assert value == pytest.approx(100 * roc_auc_score(pos[row], s[row]), abs=1e-10)


def test_metric_difference_takes_any_metric_and_draws_what_the_auroc_path_draws():
    from bench.metrics import auroc, fpr_at_tpr
    from bench.report.paired import metric_difference

    rng = np.random.default_rng(8)
    right_a, right_b = rng.random(300) < 0.8, rng.random(300) < 0.75
    a, b = rng.random(300) + right_a, rng.random(300) + 0.3 * right_b
    general = metric_difference(auroc, (a, right_a), (b, right_b), n_boot=100, seed=3)
    fast = bootstrap_auroc_difference(a, right_a, b, right_b, n_boot=100, seed=3)
    assert general.diff == pytest.approx(fast.diff, abs=1e-9)
    assert general.se == pytest.approx(fast.se, rel=1e-9)  # the same 100 resamples, two implementations
    fpr = metric_difference(fpr_at_tpr, (a, right_a), (a, right_a), n_boot=20, seed=0)
    assert (fpr.diff, fpr.se, fpr.p) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        metric_difference(auroc, (a, right_a), (b[:10], right_b), n_boot=10)


def test_bootstrap_keeps_strata_sizes():
    strata = np.r_[np.zeros(7, int), np.ones(3, int)]
    seen = []

    def stat(idx):
        seen.append(idx)
        return np.zeros(len(idx))

    paired_bootstrap(stat, strata, n_boot=50, seed=0)
    idx = np.concatenate(seen[1:])
    assert np.all(idx[:, :7] < 7) and np.all(idx[:, 7:] >= 7)  # ID indices stay ID, OOD stay OOD
    assert np.array_equal(seen[0], np.arange(10)[None, :])  # the observed sample first


def test_bootstrap_refuses_a_resample_without_negatives():
    c = np.arange(50.0)
    right = np.ones(50, bool)
    right[0] = False  # one error: most resamples draw no error at all
    with pytest.raises(ValueError, match="undefined on a resample"):
        bootstrap_auroc_difference(c, right, c[::-1].copy(), right, n_boot=100, seed=0)


# ------------------------------------------------------------------------------------------- dispatchers
def test_misclassification_uses_delong_on_one_label_vector_and_bootstrap_otherwise():
    rng = np.random.default_rng(2)
    right = rng.random(500) < 0.7
    a, b = rng.random(500) + right, rng.random(500) + 0.5 * right
    same = misclassification_difference(a, right, b, right)
    assert same.test == "delong" and same == delong(a, b, right)
    right_b = right.copy()
    right_b[:20] = ~right_b[:20]  # b's network errs on other images
    diff = misclassification_difference(a, right, b, right_b, n_boot=300, seed=0)
    assert diff.test == "bootstrap"
    assert diff.diff == pytest.approx(100 * (roc_auc_score(right, a) - roc_auc_score(right_b, b)))


def test_ood_difference_is_delong_on_the_pooled_images():
    rng = np.random.default_rng(4)
    ia, oa, ib, ob = rng.normal(1, 1, 80), rng.normal(0, 1, 50), rng.normal(1, 1, 80), rng.normal(0, 1, 50)
    r = ood_difference(ia, oa, ib, ob)
    pos = np.r_[np.ones(80), np.zeros(50)]
    assert r == delong(np.r_[ia, oa], np.r_[ib, ob], pos)
    assert (r.n_pos, r.n_neg) == (80, 50)


# ------------------------------------------------------------------------------------------------ combine
def test_combine_by_hand_and_as_weighted_stouffer():
    from bench.report.paired import Paired

    seeds = [Paired(d, s, *z_test(d, s), 0, 0, "delong") for d, s in [(1.0, 1.0), (2.0, 1.0), (3.0, 2.0)]]
    r = combine(seeds)
    assert r.diff == pytest.approx(2.0)
    assert r.se == pytest.approx(math.sqrt(6) / 3)  # sqrt(1 + 1 + 4) / 3
    assert r.z == pytest.approx(6 / math.sqrt(6))
    # scipy's weighted Stouffer over one-sided p-values with weights = per-seed standard errors gives the same z
    one_sided = [norm.sf(s.diff / s.se) for s in seeds]
    ref = combine_pvalues(one_sided, method="stouffer", weights=[s.se for s in seeds])
    assert r.z == pytest.approx(norm.isf(ref.pvalue))
    assert r.ci_low == pytest.approx(2.0 - norm.ppf(0.975) * math.sqrt(6) / 3)


def test_combine_lets_opposite_signs_cancel():
    from bench.report.paired import Paired

    seeds = [Paired(d, 1.0, *z_test(d, 1.0), 0, 0, "delong") for d in (3.0, -3.0)]
    assert combine(seeds).p == 1.0  # Fisher's method on the two-sided p = 0.0027 would call this significant


# -------------------------------------------------------------------------------------- power and size
def binormal_pair(rng, n_pos, n_neg, auc_a, auc_b, rho):
    """Scores of two methods on the same images: class-conditional unit normals, correlation rho between the
    methods, true AUROCs auc_a and auc_b (AUROC = Phi(mu / sqrt 2))."""
    mu_a, mu_b = math.sqrt(2) * norm.ppf(auc_a), math.sqrt(2) * norm.ppf(auc_b)
    pos = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    e1, e2 = rng.normal(size=pos.size), rng.normal(size=pos.size)
    b = mu_b * pos + e1
    a = mu_a * pos + rho * e1 + math.sqrt(1 - rho ** 2) * e2
    return a, b, pos


# The documented example (docs/statistics.md): 10,000 images per seed, the two methods' scores correlated 0.8 (two
# scorers of one network), true AUROC 91% vs 90% (power) or 90% vs 90% (size), 3 seeds, 200 simulated benchmarks.
# OOD: 5,000 in-distribution vs 5,000 OOD images. Misclassification: 9,800 right vs 200 errors (a 98%-accurate
# network), both methods with the same errors (DeLong). Each benchmark is judged three ways: the pooled per-image
# test over the 3 seeds (``combine``), DeLong on seed 0 alone, and the leaderboard's paired t-test on the 3 per-seed
# AUROCs (bench/report/stats.py).
SCENARIOS = {"ood": (5000, 5000), "misclassification": (9800, 200)}
REPS, SEEDS, RHO = 200, 3, 0.8


def rejection_rates(scenario: str, auc_a: float, seed: int) -> dict[str, float]:
    from bench.report.stats import paired_t_test

    n_pos, n_neg = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    hits = {"pooled": 0, "one seed": 0, "t-test": 0}
    for _ in range(REPS):
        per_seed = [delong(*binormal_pair(rng, n_pos, n_neg, auc_a, 0.90, RHO)) for _ in range(SEEDS)]
        hits["pooled"] += combine(per_seed).p < 0.05
        hits["one seed"] += per_seed[0].p < 0.05
        # the t-test sees only the per-seed differences (here they vary by image sampling alone)
        hits["t-test"] += paired_t_test([r.diff for r in per_seed], [0.0] * SEEDS) < 0.05
    return {k: v / REPS for k, v in hits.items()}


def test_one_point_on_10000_images_is_resolved_and_a_null_is_not():
    rng = np.random.default_rng(2026)
    alt = delong(*binormal_pair(rng, 5000, 5000, 0.91, 0.90, 0.8))
    null = delong(*binormal_pair(rng, 5000, 5000, 0.90, 0.90, 0.8))
    assert alt.p < 0.05 and alt.ci_low > 0
    assert null.p > 0.05 and null.ci_low < 0 < null.ci_high


@pytest.fixture(scope="module")
def rates():
    return {(sc, kind): rejection_rates(sc, auc, seed) for sc in SCENARIOS
            for kind, auc, seed in (("power", 0.91, 11), ("size", 0.90, 12))}


@pytest.mark.slow  # 4 x 200 simulated benchmarks of 3 seeds x 10,000 images: about 45 s on 2 busy cores
def test_power_and_size_by_simulation(rates):
    assert rates[("ood", "power")]["pooled"] >= 0.9  # a 1-point OOD difference is found nearly every time
    for sc in SCENARIOS:
        for test, r in rates[(sc, "size")].items():
            assert r <= 0.09, (sc, test)  # 0.05 nominal; 200 replicates have a binomial sd of 0.015
        # pooling seeds never loses power to one seed, and the per-image test beats the seed t-test
        assert rates[(sc, "power")]["pooled"] >= rates[(sc, "power")]["one seed"]
        assert rates[(sc, "power")]["pooled"] > rates[(sc, "power")]["t-test"]


def doc_table(rates) -> str:
    """The Markdown rows docs/statistics.md shows: rejection rate (%) at alpha 0.05 per scenario and test."""
    lines = []
    for sc, (n_pos, n_neg) in SCENARIOS.items():
        for kind in ("power", "size"):
            r = rates[(sc, kind)]
            lines.append(f"| {sc} ({n_pos:,} + {n_neg:,}) | {kind} | {100 * r['pooled']:.1f} | "
                         f"{100 * r['one seed']:.1f} | {100 * r['t-test']:.1f} |")
    return "\n".join(lines)


@pytest.mark.slow
def test_docs_show_the_simulated_numbers(rates):
    from pathlib import Path

    docs = Path(__file__).parent.parent / "docs"
    assert doc_table(rates) in (docs / "statistics.md").read_text(), doc_table(rates)
    power, size = rates[("ood", "power")]["pooled"], rates[("ood", "size")]["pooled"]
    assert (f"found in {100 * power:.0f}% of\nsimulated benchmarks, a null one in {100 * size:.1f}%"
            in (docs / "reporting.md").read_text())


# ------------------------------------------------------------------------------------ bench report --versus
def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_versus_run(root, seeds=(0, 1, 2), n_id=400, n_ood=300, shuffle_method=None, perfect=False):
    """A finished run of msp, energy (same network, same predictions, another confidence), mcdropout (same network,
    predictions moved by its dropout, so it errs on other images) and trustgan (a network of its own), with rows
    computed from the saved predictions as ``bench run`` does. ``shuffle_method`` saves that method's ID labels in
    another order; ``perfect`` makes the shared network right on every image."""
    from _runs import manifest
    from bench.metrics import classification_metrics, ood_metrics
    from bench.run.store import RunStore, cell_key

    methods = ("msp", "energy", "mcdropout", "trustgan")
    store = RunStore(root / "run-v")
    store.ensure_writable()
    store.write_manifest(manifest("run-v", list(methods), tuple(seeds), datasets=["mnist", "ood:fashion"]))
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        y = rng.integers(0, 10, n_id)
        logits_id = rng.normal(size=(n_id, 10)) * 1.5
        logits_id[np.arange(n_id), y] += 3.0  # about 85% right
        if perfect:
            y = logits_id.argmax(axis=1)
        logits_ood = rng.normal(size=(n_ood, 10)) * 1.5
        for m in methods:
            li, lo = logits_id.copy(), logits_ood.copy()
            if m == "mcdropout":
                li, lo = li + rng.normal(size=li.shape) * 0.7, lo + rng.normal(size=lo.shape) * 0.7
            if m == "trustgan":
                li, lo = li + rng.normal(size=li.shape), lo * 0.5
            pi, po = _softmax(li).astype(np.float32), _softmax(lo).astype(np.float32)
            if m == "energy":  # log-sum-exp of the logits
                ci = np.log(np.exp(li).sum(1)).astype(np.float32)
                co = np.log(np.exp(lo).sum(1)).astype(np.float32)
            else:
                ci, co = pi.max(1), po.max(1)  # rows from the float32 arrays that are saved, as bench run does
            labels = rng.permutation(y) if m == shuffle_method else y
            base = {"run_id": "run-v", "method": m, "backbone": "lenet", "seed": s, "fold": 0}
            id_vals = classification_metrics(pi, y, ci)
            store.write_cell(cell_key(m, s, 0, "mnist"),
                             [{**base, "eval_set": "mnist", "shift": "none", "severity": "", "metric": k,
                               "value": id_vals[k]} for k in ("accuracy", "auroc")],
                             {"probs": pi, "confidence": ci, "labels": labels})
            ood_vals = {f"ood_{k}": v for k, v in ood_metrics(ci, co).items()}
            store.write_cell(cell_key(m, s, 0, "ood:fashion"),
                             [{**base, "eval_set": "ood:fashion", "shift": "ood", "severity": "", "metric": k,
                               "value": ood_vals[k]} for k in ("ood_auroc", "ood_fpr95")],
                             {"probs": po, "confidence": co,
                              "labels": -np.ones(n_ood, np.int64)})
            store.write_cell(cell_key(m, s, 0, "cost"),
                             [{**base, "eval_set": "cost", "shift": "cost", "severity": "", "metric": "params",
                               "value": 1.0}])
    store.write_results_csv()
    return store.dir


def test_versus_matches_the_functions_on_the_saved_predictions(tmp_path):
    from bench.report.runs import load_runs
    from bench.report.versus import versus

    run = write_versus_run(tmp_path)
    runs = load_runs([run])
    v = versus(runs, "msp", ["msp", "energy", "mcdropout", "trustgan"], n_boot=300, seed=0)
    assert set(v.skipped) == {"trustgan"}  # trains its own network
    more = versus(runs, "msp", ["confidnet", "my-model", "energy"], n_boot=50, seed=0).skipped
    assert more == {"confidnet": "trains a part of its own (head, members) on the frozen baseline; compare it across "
                                 "seeds (the † marks)",
                    "my-model": "unknown to the registry, so not known to score the baseline's network; compare it "
                                "across seeds (the † marks)"}
    by = {(t.eval_set, r.method): r for t in v.tables for r in t.rows}
    assert set(by) == {(ds, m) for ds in ("mnist", "ood:fashion") for m in ("energy", "mcdropout")}
    # the pooled difference is the mean of the leaderboard's own per-seed AUROC rows
    rows = runs.rows
    for ds, metric in (("mnist", "auroc"), ("ood:fashion", "ood_auroc")):
        for m in ("energy", "mcdropout"):
            per = rows[(rows["eval_set"] == ds) & (rows["metric"] == metric)].pivot(index="seed", columns="method",
                                                                                       values="value")
            assert by[(ds, m)].result.diff == pytest.approx((per[m] - per["msp"]).mean(), abs=1e-9)
    assert by[("mnist", "energy")].result.test == "delong"  # same network, same predictions
    assert by[("mnist", "mcdropout")].result.test == "bootstrap"  # errs on other images
    assert by[("ood:fashion", "mcdropout")].result.test == "delong"
    # Holm over the two methods of a column
    t = next(t for t in v.tables if t.eval_set == "mnist")
    assert [r.p_holm for r in t.rows] == pytest.approx(holm_ref([r.result.p for r in t.rows]))
    assert t.images == 400 and 0 < t.errors < 400


def holm_ref(p):
    """Holm by its definition, for two p-values."""
    lo, hi = sorted(p)
    adj = {lo: min(1, 2 * lo), hi: min(1, max(2 * lo, hi))}
    return [adj[x] for x in p]


def test_cli_versus_markdown_and_default_unchanged(tmp_path, capsys):
    from bench.cli import main

    run = write_versus_run(tmp_path)
    assert main(["report", str(run)]) == 0
    plain = capsys.readouterr().out
    assert main(["report", str(run), "--versus", "msp", "--versus-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(plain)  # the leaderboard tables and their † marks are untouched
    extra = out[len(plain):]
    assert "### Versus msp: misclassification AUROC on mnist" in extra
    assert "### Versus msp: OOD AUROC, fashion" in extra
    assert "| energy | **" in extra  # bold: Holm p < 0.05
    assert "| mcdropout |" in extra and "trustgan: trains a network of its own; compare it across seeds" in extra
    assert "400 images per seed" in extra and "400 in-distribution and 300 OOD images per seed" in extra


@pytest.mark.parametrize("make, args, message", [
    ("missing", ["--versus", "msp"], "--versus needs per-sample predictions, and"),
    ("shuffled", ["--versus", "msp"], "labels differ"),
    ("plain", ["--versus", "trustgan"], "must score the run's shared baseline"),
    ("plain", ["--versus", "nosuch"], "not in these runs"),
    ("plain", ["--versus", "msp", "--format", "latex"], "Markdown only"),
    ("plain", ["--versus", "msp", "--metrics", "accuracy"], "shows no AUROC column"),
    ("plain", ["--versus", "msp", "--methods", "msp,trustgan"],
     "no other method of the report scores msp's network (trustgan: trains a network of its own)"),
    ("plain", ["--versus", "msp", "--methods", "msp"], "(it is the only method)"),
    ("perfect", ["--versus", "msp"], "energy vs msp seed 0 fold 0 mnist: delong: need at least 2 positives and 2 "
                                     "negatives, got 400 and 0"),
])
def test_cli_versus_refusals_are_one_line(tmp_path, capsys, make, args, message):
    from bench.cli import main

    run = write_versus_run(tmp_path, shuffle_method="energy" if make == "shuffled" else None,
                           perfect=make == "perfect")
    if make == "missing":
        (run / "predictions" / "energy__seed1__fold0__mnist.npz").unlink()
    assert main(["report", str(run), *args]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_versus_follows_groups(tmp_path, capsys):
    from bench.cli import main

    run = write_versus_run(tmp_path)
    assert main(["report", str(run), "--groups", "ood-*", "--versus", "msp", "--versus-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "### Versus msp: OOD AUROC, fashion" in out and "misclassification AUROC" not in out


def test_cli_versus_refuses_a_report_csv(tmp_path, capsys):
    from bench.cli import main

    run = write_versus_run(tmp_path)
    board = tmp_path / "board.csv"
    assert main(["report", str(run), "--out", str(board)]) == 0
    capsys.readouterr()
    assert main(["report", str(board), "--versus", "msp"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--versus needs the run directories" in err and "\n" not in err
