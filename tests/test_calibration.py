"""Calibration maps fitted on the validation split (vector, matrix, Dirichlet, histogram binning, isotonic): each fit
on constructed data whose answer is worked out by hand in the comments, or against an independent implementation
(scikit-learn's multinomial logistic regression; a pool-adjacent-violators written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.dirichlet import cross_validate_odir, log_probs
from bench.methods.histbin import fit_histogram_binning, renormalise
from bench.methods.isotonic import fit_isotonic, interp
from bench.methods.matrix import fit_affine, odir_penalty

CALIBRATORS = ("vector", "matrix", "dirichlet", "histbin", "isotonic")


def loaded(name: str, state: dict, **cfg):
    """A method whose fitted state is set by hand (what load_state_dict does after the weights)."""
    cls = METHODS.get(name)
    m = cls(cls.Config(**cfg))
    m.load_extra_state(state)
    return m


def grouped(groups: list[tuple[list[float], int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of logits repeated: (logits, how many of label 0, how many of label 1)."""
    xs, ys = [], []
    for z, n0, n1 in groups:
        xs += [z] * (n0 + n1)
        ys += [0] * n0 + [1] * n1
    return torch.tensor(xs, dtype=torch.float64), torch.tensor(ys)


# ------------------------------------------------------------------------------------------- vector scaling
def test_vector_scaling_recovers_hand_computed_per_class_scales():
    # Three distinct logit rows and three free parameters (w0, w1 and d = b0 - b1), so the NLL optimum matches each
    # row's label frequency exactly: P(label 0) = sigmoid(w0 z0 - w1 z1 + d).
    #   z = (0, 0), 1 of each label:    sigmoid(d) = 1/2          -> d = 0
    #   z = (2, 0), 9 of 0 and 1 of 1:  sigmoid(2 w0) = 9/10      -> w0 = ln 9 / 2 = ln 3
    #   z = (0, 1), 1 of 0 and 4 of 1:  sigmoid(-w1) = 1/5        -> w1 = ln 4
    z, y = grouped([([0.0, 0.0], 1, 1), ([2.0, 0.0], 9, 1), ([0.0, 1.0], 1, 4)])
    w, b = fit_affine(z, y, diagonal=True)
    assert torch.equal(w, torch.diag(torch.diagonal(w)))  # the diagonal form stays diagonal
    # to the optimiser's tolerance (L-BFGS stops at a gradient of 1e-7 or a loss change of 1e-10)
    torch.testing.assert_close(torch.diagonal(w), torch.tensor([math.log(3.0), math.log(4.0)], dtype=torch.float64),
                               atol=1e-4, rtol=0)
    assert abs(float(b[0] - b[1])) < 1e-4


def test_vector_scaling_can_change_the_argmax():
    # w = (1, 3), b = 0: logits (2, 1) -> (2, 3), so the prediction moves from class 0 to class 1
    m = loaded("vector", {"weight": torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64)),
                          "bias": torch.zeros(2, dtype=torch.float64)})
    probs, conf = m.score_logits(torch.tensor([[2.0, 1.0]]))
    e = 1 / (1 + math.e)  # softmax(2, 3) = (1 / (1 + e), e / (1 + e))
    torch.testing.assert_close(probs, torch.tensor([[e, 1 - e]]))
    torch.testing.assert_close(conf, torch.tensor([1 - e]))
    torch.testing.assert_close(m.scales, torch.tensor([1.0, 3.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------- matrix scaling
def _noisy_problem(n: int = 600, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from a miscalibrated model (labels follow softmax(A z + a), not softmax(z))."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    a = torch.eye(c, dtype=torch.float64) * 0.6 + 0.2 * torch.randn(c, c, generator=g, dtype=torch.float64)
    y = torch.multinomial((z @ a.T + 0.3).softmax(1), 1, generator=g).squeeze(1)
    return z, y


def _sklearn_multinomial(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=10_000, tol=1e-10)  # no penalty
    return lr.fit(x.numpy(), y.numpy()).predict_proba(x.numpy())


def test_matrix_scaling_is_multinomial_logistic_regression_on_logits():
    # unregularised matrix scaling is a multinomial logistic regression with the logits as features: scikit-learn's
    # (another optimiser, another parametrisation) must give the same probabilities
    z, y = _noisy_problem()
    w, b = fit_affine(z, y)
    ours = (z @ w.T + b).softmax(1).numpy()
    np.testing.assert_allclose(ours, _sklearn_multinomial(z, y), atol=1e-4)


def test_odir_penalty_hand_value():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([1.0, -1.0])
    # lam / (C (C - 1)) * (2^2 + 3^2) + mu / C * (1 + 1) = 2 / 2 * 13 + 4 / 2 * 2 = 13 + 4
    assert float(odir_penalty(w, b, lam=2.0, mu=4.0)) == pytest.approx(17.0)


def test_fitted_maps_never_raise_the_validation_nll(tiny, cached_tiny_ctx):
    """Every linear fit starts from the identity map (penalty 0), so on the split it was fitted on its NLL can only
    go down; histogram binning and isotonic do not minimise the NLL and are left out."""
    train, val, _ = tiny
    for name in ("vector", "matrix", "dirichlet"):
        m = METHODS.get(name)(backbone="lenet").fit(train, val, cached_tiny_ctx)
        logits = m.logits(val.images)
        before = F.cross_entropy(logits.double(), val.labels)
        x = m._inputs(logits)  # the fitted map's own float64 scores, not the float32 probabilities
        after = F.cross_entropy(x @ m.weight.T + m.bias, val.labels)
        assert float(after) <= float(before) + 1e-9, name


# ------------------------------------------------------------------------------------------- Dirichlet
def test_dirichlet_with_w_identity_over_t_is_temperature_scaling():
    # softmax(ln softmax(z) / T) = softmax((z - lse(z)) / T) = softmax(z / T): the shift cancels in the softmax
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 3.0]])
    t = 2.5
    d = loaded("dirichlet", {"weight": torch.eye(3, dtype=torch.float64) / t,
                             "bias": torch.zeros(3, dtype=torch.float64), "lam": torch.tensor(0.0),
                             "mu": torch.tensor(0.0)})
    temp = loaded("temperature", {"temperature": t})
    torch.testing.assert_close(d.score_logits(z)[0], temp.score_logits(z)[0])


def test_dirichlet_fit_reaches_the_temperature_optimum_on_the_hand_case():
    # test_posthoc's hand case: logits (2, 0) four times, labels 0, 0, 0, 1. Temperature scaling's optimum is
    # T = 2 / ln 3, where softmax(2 / T) = (3/4, 1/4); Dirichlet calibration (unpenalised) sees one input row and
    # fits the same frequency 3/4
    z = torch.tensor([[2.0, 0.0]] * 4)
    y = torch.tensor([0, 0, 0, 1])
    w, b = fit_affine(log_probs(z), y)
    probs = (log_probs(z) @ w.T + b).softmax(1)
    torch.testing.assert_close(probs[0], torch.tensor([0.75, 0.25], dtype=torch.float64), atol=1e-6, rtol=0)


def test_dirichlet_unpenalised_is_multinomial_logistic_regression_on_log_probs():
    z, y = _noisy_problem(seed=1)
    x = log_probs(z)
    w, b = fit_affine(x, y)
    np.testing.assert_allclose((x @ w.T + b).softmax(1).numpy(), _sklearn_multinomial(x, y), atol=1e-4)


def test_odir_shrinks_off_diagonal_and_intercept_only():
    z, y = _noisy_problem(seed=2)
    x = log_probs(z)
    free, _ = fit_affine(x, y)
    w, b = fit_affine(x, y, lam=1e6, mu=1e6)
    off = ~torch.eye(3, dtype=torch.bool)
    assert free[off].abs().max() > 0.05  # the data ask for interactions...
    assert w[off].abs().max() < 1e-3 and b.abs().max() < 1e-3  # ...which the huge penalty removes
    assert torch.diagonal(w).min() > 0.1  # while the per-class scales stay free
    # in that limit the map is vector scaling of ln q without bias: the same optimum as fitting that form directly
    wv, _ = fit_affine(x, y, diagonal=True, mu=1e6)
    torch.testing.assert_close(torch.diagonal(w), torch.diagonal(wv), atol=1e-3, rtol=0)


def test_dirichlet_cross_validation_picks_the_lowest_held_out_nll():
    z, y = _noisy_problem(seed=3, n=300)
    x = log_probs(z)
    lam, mu, scores = cross_validate_odir(x, y, lams=(1e-2, 1e2), mus=(1e-2, 1e2), folds=3,
                                          generator=torch.Generator().manual_seed(0))
    assert set(scores) == {(a, b) for a in (1e-2, 1e2) for b in (1e-2, 1e2)}
    assert scores[(lam, mu)] == min(scores.values())
    # the held-out NLL of one pair, recomputed fold by fold from the same fold assignment
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    fold = torch.empty(300, dtype=torch.long)
    fold[perm] = torch.arange(300) % 3
    total = 0.0
    for k in range(3):
        w, b = fit_affine(x[fold != k], y[fold != k], lam=1e2, mu=1e-2)
        total += float(F.cross_entropy(x[fold == k] @ w.T + b, y[fold == k], reduction="sum"))
    assert scores[(1e2, 1e-2)] == pytest.approx(total / 300, rel=1e-4)


def test_dirichlet_fixed_penalties_skip_the_cross_validation(tiny, cached_tiny_ctx):
    train, val, _ = tiny
    cls = METHODS.get("dirichlet")
    m = cls(cls.Config(lam=0.5, mu=2.0), backbone="lenet").fit(train, val, cached_tiny_ctx)
    assert (m.lam, m.mu) == (0.5, 2.0)
    assert m.train_log.extra["odir_lam"] == [0.5] and m.train_log.extra["odir_mu"] == [2.0]
    assert "cv_grid" not in cls.preflight(m.config, None, 0) and "cv_grid" in cls.preflight(cls.Config(), None, 0)
    with pytest.raises(UsageError, match="dirichlet.lam"):
        cls.Config(lam=-0.5)


# ------------------------------------------------------------------------------------------- histogram binning
# five validation images, two classes: probabilities (p0, p1) and labels
HB_PROBS = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.3, 0.7], [0.2, 0.8]], dtype=torch.float64)
HB_LABELS = torch.tensor([0, 1, 0, 1, 1])


def test_histogram_binning_bin_frequencies_counted_by_hand():
    edges, values = fit_histogram_binning(HB_PROBS, HB_LABELS, bins=2)
    # bins (0, 0.5] and (0.5, 1]. Class 0: p0 = 0.3, 0.2 in the first bin, labels 1, 1 -> 0 of 2 are class 0;
    # p0 = 0.9, 0.8, 0.7 in the second, labels 0, 1, 0 -> 2/3. Class 1: p1 = 0.1, 0.2, 0.3 in the first, labels
    # 0, 1, 0 -> 1/3; p1 = 0.7, 0.8 in the second, labels 1, 1 -> 1.
    torch.testing.assert_close(values, torch.tensor([[0.0, 2 / 3], [1 / 3, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(edges, torch.tensor([[0.0, 0.5, 1.0]] * 2, dtype=torch.float64))
    m = loaded("histbin", {"edges": edges, "values": values}, bins=2)
    probs, conf = m.score_logits(torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.5, 0.5]]).log())
    # (0.6, 0.4): q = (2/3, 1/3), sums to 1. (0.4, 0.6): q = (0, 1). (0.5, 0.5): 0.5 is in the right-closed first
    # bin for both classes, q = (0, 1/3) -> renormalised (0, 1): the tie becomes class 1
    torch.testing.assert_close(probs, torch.tensor([[2 / 3, 1 / 3], [0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(conf, torch.tensor([2 / 3, 1.0, 1.0]))


def test_histogram_binning_empty_bins_and_equal_mass_bins():
    _, values = fit_histogram_binning(HB_PROBS, HB_LABELS, bins=3)
    # bins (0, 1/3], (1/3, 2/3], (2/3, 1]: no p0 and no p1 falls in the middle bin, which keeps its midpoint 1/2;
    # class 0: {0.3, 0.2} -> 0/2, {0.9, 0.8, 0.7} -> 2/3; class 1: {0.1, 0.2, 0.3} -> 1/3, {0.7, 0.8} -> 2/2
    torch.testing.assert_close(values, torch.tensor([[0.0, 0.5, 2 / 3], [1 / 3, 0.5, 1.0]], dtype=torch.float64))
    edges, values = fit_histogram_binning(HB_PROBS, HB_LABELS, bins=2, binning="mass")
    # the median cuts each class in two: class 0 at 0.7 -> (0, 0.7] = {0.7, 0.3, 0.2}, labels 0, 1, 1 -> 1/3 and
    # (0.7, 1] = {0.9, 0.8}, labels 0, 1 -> 1/2; class 1 at 0.3 -> {0.1, 0.2, 0.3}: 1/3 and {0.7, 0.8}: 1
    torch.testing.assert_close(edges, torch.tensor([[0.0, 0.7, 1.0], [0.0, 0.3, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(values, torch.tensor([[1 / 3, 0.5], [1 / 3, 1.0]], dtype=torch.float64))


def test_renormalise_falls_back_where_every_class_gets_zero():
    q = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    fallback = torch.tensor([[0.3, 0.7], [0.5, 0.5]])
    torch.testing.assert_close(renormalise(q, fallback), torch.tensor([[0.3, 0.7], [0.25, 0.75]]))


# ------------------------------------------------------------------------------------------- isotonic
def pava(y: list[float]) -> list[float]:
    """Least-squares non-decreasing fit of y (already ordered by x), by pooling adjacent violators."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    return [s / n for s, n in blocks for _ in range(int(n))]


def test_pava_hand_case():
    assert pava([0.0, 1.0, 0.0, 1.0]) == [0.0, 0.5, 0.5, 1.0]
    assert pava([1.0, 0.0, 0.0]) == [1 / 3, 1 / 3, 1 / 3]


def test_isotonic_fit_equals_pool_adjacent_violators():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 3, generator=g, dtype=torch.float64) * 2
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    p = z.softmax(1)
    maps = fit_isotonic(p, y)
    for k, (xs, ys) in enumerate(maps):
        order = torch.argsort(p[:, k])
        expected = pava([float(y[i] == k) for i in order])
        got = interp(p[order, k], xs, ys)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_isotonic_prediction_equals_scikit_learn():
    from sklearn.isotonic import IsotonicRegression

    g = torch.Generator().manual_seed(1)
    p = torch.rand(100, generator=g, dtype=torch.float64) * 0.8 + 0.1
    hit = (torch.rand(100, generator=g, dtype=torch.float64) < p).double()
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p.numpy(), hit.numpy())
    xs, ys = torch.from_numpy(iso.X_thresholds_), torch.from_numpy(iso.y_thresholds_)
    new = torch.cat([torch.tensor([0.0, 0.05, 1.0], dtype=torch.float64), torch.rand(50, generator=g,
                                                                                       dtype=torch.float64)])
    np.testing.assert_allclose(interp(new, xs, ys).numpy(), iso.predict(new.numpy()), atol=1e-12)


def test_isotonic_method_renormalises_the_one_vs_rest_maps():
    # class 0 maps everything to 0.2, class 1 is the identity through (0, 0) and (1, 1)
    state = {"x": [torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)],
             "y": [torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)]}
    m = loaded("isotonic", state)
    probs, conf = m.score_logits(torch.tensor([[0.4, 0.6]]).log())
    # q = (0.2, 0.6) -> (0.25, 0.75)
    torch.testing.assert_close(probs, torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(conf, torch.tensor([0.75]))


# ------------------------------------------------------------------------------------------- all of them
@pytest.mark.parametrize("name", CALIBRATORS)
def test_fitted_state_is_in_the_checkpoint_and_predict_needs_it(name, tiny, cached_tiny_ctx):
    from bench.errors import NotFittedError

    with pytest.raises(NotFittedError):
        METHODS.get(name)().score_logits(torch.zeros(1, 10))
    train, val, test = tiny
    m = METHODS.get(name)(backbone="lenet").fit(train, val, cached_tiny_ctx)
    state = m.state_dict()["extra"]
    assert state, f"{name} keeps its fitted map in extra_state"
    p = m.predict(test.images)
    assert torch.allclose(p.probs.sum(1), torch.ones(len(test))) and torch.equal(p.confidence, p.probs.max(1).values)


def test_each_option_takes_effect():
    """A hyper-parameter that silently never reaches the fit is a known failure mode (docs: OpenOOD PR #298): each
    option here changes the fitted map."""
    z, y = _noisy_problem(seed=4)

    def fitted(name: str, **cfg) -> dict:
        cls = METHODS.get(name)
        m = cls(cls.Config(**cfg))
        m._fit_logits(z.float(), y)
        return m.extra_state()

    def differ(a: dict, b: dict) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))

    assert differ(fitted("matrix"), fitted("matrix", lam=10.0))
    assert differ(fitted("matrix"), fitted("matrix", mu=10.0))
    assert differ(fitted("matrix", max_iter=1), fitted("matrix"))
    assert differ(fitted("vector", max_iter=1), fitted("vector"))
    assert differ(fitted("dirichlet", lam=0.0, mu=0.0), fitted("dirichlet", lam=10.0, mu=0.0))
    assert differ(fitted("dirichlet", lam=0.0, mu=0.0), fitted("dirichlet", lam=0.0, mu=10.0))
    assert fitted("histbin", bins=4)["values"].shape == (3, 4)
    assert differ(fitted("histbin", bins=4), fitted("histbin", bins=4, binning="mass"))
