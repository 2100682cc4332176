"""The post-hoc misclassification detectors doctor, relu, sirc and pnorm (docs/failure-prediction.md): hand-computed
cases (every expected value is worked out in the comments), the formula each authors' code computes on a
constructed case, and every hyper-parameter takes effect on a lenet fitted on the tiny slices."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.cache import CheckpointCache
from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.pnorm import MSP, choose_p, maxlogit_pnorm
from bench.methods.relu import fit_relative_uncertainty
from bench.methods.sirc import residual_space, sirc_parameters

SCORERS = ["doctor", "relu", "sirc", "pnorm"]


def logit_conf(name: str, logits, **cfg) -> torch.Tensor:
    """Confidence of a logit scorer that needs no fitting (doctor) on hand-made logits."""
    cls = METHODS.get(name)
    return cls(cls.Config(**cfg), num_classes=len(logits[0])).predict_from_logits(torch.tensor(logits)).confidence


# --- doctor -------------------------------------------------------------------------------------------------------

def test_doctor_hand_computed():
    # logits (ln 3, 0): p = (3/4, 1/4). alpha: g = 9/16 + 1/16 = 5/8, ratio (1 - g)/g = 3/5, confidence log(5/3);
    # beta: P_e = 1/4, ratio 1/3, confidence log 3.  Two classes in general: alpha -> log cosh(a / T) (ratio
    # 2 e^a / (e^2a + 1)), beta -> a / T. T = 2 on (ln 3, 0): log cosh(ln 3 / 2) = log(2 / sqrt 3).
    # Three equal logits: p = 1/3 each, g = 1/3, ratio 2; P_e = 2/3, ratio 2: both -log 2.
    ln3 = math.log(3)
    got = logit_conf("doctor", [[ln3, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(got, torch.tensor([math.log(5 / 3), 0.0]))
    torch.testing.assert_close(logit_conf("doctor", [[ln3, 0.0]], variant="beta"), torch.tensor([ln3]))
    torch.testing.assert_close(logit_conf("doctor", [[ln3, 0.0]], temperature=2.0),
                               torch.tensor([math.log(2 / math.sqrt(3))]))
    for variant in ("alpha", "beta"):
        torch.testing.assert_close(logit_conf("doctor", [[0.0, 0.0, 0.0]], variant=variant),
                                   torch.tensor([-math.log(2)]))


def test_doctor_keeps_confident_predictions_apart():
    # logits (20, 0) and (40, 0): log cosh 20 = 20 - log 2 + log(1 + e^-40) and 40 - log 2. In float32, 1 - g rounds
    # to 0 for both (p_2 = e^-40), so the ratio itself would tie them at 0; the log-space score does not.
    got = logit_conf("doctor", [[20.0, 0.0], [40.0, 0.0]])
    torch.testing.assert_close(got, torch.tensor([20 - math.log(2), 40 - math.log(2)]))
    got = logit_conf("doctor", [[20.0, 0.0], [40.0, 0.0]], variant="beta")
    torch.testing.assert_close(got, torch.tensor([20.0, 40.0]))


@pytest.mark.parametrize("variant", ["alpha", "beta"])
def test_doctor_is_minus_log_of_the_authors_ratio(variant):
    # the authors' code (fgranese/DOCTOR): g_x = 1 - sum p^2, pe_x = 1 - p(predicted); ratio F / (1 - F) with F one
    # of them, rejected above a threshold. Ours must be -log(ratio) on moderate logits, where the direct formula is
    # accurate in float64.
    z = torch.randn(200, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p = (z / 1.5).softmax(1)
    f = 1 - (p ** 2).sum(1) if variant == "alpha" else 1 - p.max(1).values
    expected = -torch.log(f / (1 - f))
    got = logit_conf("doctor", z.tolist(), variant=variant, temperature=1.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


# --- relu ---------------------------------------------------------------------------------------------------------

def relu_with(matrix: torch.Tensor, **cfg):
    cls = METHODS.get("relu")
    m = cls(cls.Config(**cfg), num_classes=matrix.shape[0])
    m.matrix = matrix
    return m


def test_relu_hand_computed():
    # one wrong validation prediction p_w = (1/2, 1/2, 0), one right p_c = (1/2, 0, 1/2). Second moments: p_w p_w^T
    # has 1/4 at (0,1),(1,0) off the diagonal; p_c p_c^T 1/4 at (0,2),(2,0). lambda = 1/2: 1/8 at (0,1), -1/8 at
    # (0,2) -> relu keeps (0,1),(1,0) = 1/8; Frobenius norm sqrt(2/64) = sqrt 2 / 8 -> D(0,1) = D(1,0) = 1/sqrt 2.
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]], dtype=torch.float64)
    wrong = torch.tensor([True, False])
    d = fit_relative_uncertainty(probs, wrong, 0.5)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[0, 1] = expected[1, 0] = 1 / math.sqrt(2)
    torch.testing.assert_close(d, expected)
    # u(p_w) = 2 (1/2)(1/2)(1/sqrt 2) = 1/(2 sqrt 2), u(p_c) = 0: confidence -1/(2 sqrt 2) and 0. Logits = log p.
    logits = torch.tensor([[0.0, 0.0, -math.inf], [0.0, -math.inf, 0.0]])
    got = relu_with(d).predict_from_logits(logits).confidence
    torch.testing.assert_close(got, torch.tensor([-1 / (2 * math.sqrt(2)), 0.0]))
    # lambda = 0: D = -E_right[p p^T] <= 0 everywhere -> the Gini fallback, ones off the diagonal / sqrt 6;
    # u(p_w) = (1 - sum p^2) / sqrt 6 = (1/2) / sqrt 6
    d0 = fit_relative_uncertainty(probs, wrong, 0.0)
    torch.testing.assert_close(d0, (1 - torch.eye(3, dtype=torch.float64)) / math.sqrt(6))
    got = relu_with(d0, lbd=0.0).predict_from_logits(logits[:1]).confidence
    torch.testing.assert_close(got, torch.tensor([-0.5 / math.sqrt(6)]))


def test_relu_matches_the_authors_closed_form():
    # the authors' code (edadaltocg/relative-uncertainty, MetricLearningLagrange.fit): params = -(1 - lbd) mean of
    # p p^T over right predictions + lbd mean over wrong ones; lower triangle below the diagonal, symmetrised, relu,
    # divided by its norm; score diag(p params p^T). Written out here on random probabilities.
    g = torch.Generator().manual_seed(1)
    probs = (torch.randn(300, 5, generator=g, dtype=torch.float64) * 2).softmax(1)
    wrong = torch.rand(300, generator=g) < 0.3
    lbd = 0.8  # errors weighted enough for positive entries (else both fall back to Gini)
    outer = torch.einsum("ij,ik->ijk", probs, probs)
    params = -(1 - lbd) * outer[~wrong].mean(0) + lbd * outer[wrong].mean(0)
    params = torch.tril(params, diagonal=-1)
    params = torch.relu(params + params.T)
    assert bool((params > 0).any())
    params = params / params.norm()
    torch.testing.assert_close(fit_relative_uncertainty(probs, wrong, lbd), params)
    test = torch.randn(20, 5, generator=g, dtype=torch.float64)
    p = test.softmax(1)
    expected = -torch.diag(p @ params @ p.T)
    got = relu_with(params, lbd=lbd).predict_from_logits(test.float()).confidence
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


# --- sirc ---------------------------------------------------------------------------------------------------------

def sirc_with(a: float, b: float, **cfg):
    cls = METHODS.get("sirc")
    m = cls(cls.Config(**cfg), num_classes=2)
    m.model = torch.nn.Identity()  # predict_from_features only switches its mode; the scores read (features, logits)
    m._set_state({"a": torch.tensor([a], dtype=torch.float64), "b": torch.tensor([b], dtype=torch.float64)})
    return m


def test_sirc_parameters_hand_computed():
    # L1 norms of the validation features: |1| + |0| = 1, |1| + |-1| = 2, |-2| + |1| = 3: mean 2, std (n - 1)
    # sqrt((1 + 0 + 1) / 2) = 1 -> a = 2 - 3 * 1 = -1, b = 1; sigmas = 1: a = 1
    f = torch.tensor([[1.0, 0.0], [1.0, -1.0], [-2.0, 1.0]])
    state = sirc_parameters(f, 3.0)
    torch.testing.assert_close(state["a"], torch.tensor([-1.0], dtype=torch.float64))
    torch.testing.assert_close(state["b"], torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(sirc_parameters(f, 1.0)["a"], torch.tensor([1.0], dtype=torch.float64))


def test_sirc_hand_computed():
    # a = 2, b = 1. logits (ln 3, 0): p = (3/4, 1/4), 1 - MSP = 1/4 -> -log(1/4) = log 4.
    # features (1, 1): ||f||_1 = 2 = a -> log(1 + e^0) = log 2: confidence log 4 - log 2 = log 2.
    # features (3, 1): ||f||_1 = 4, -b (4 - 2) = -2 -> log(1 + e^-2): confidence log 4 - log(1 + e^-2).
    # -entropy instead: H = -(3/4 ln 3/4 + 1/4 ln 1/4) = ln 4 - (3/4) ln 3: confidence -log H - log 2.
    ln3 = math.log(3)
    logits = torch.tensor([[ln3, 0.0], [ln3, 0.0]])
    feats = torch.tensor([[1.0, 1.0], [3.0, 1.0]])
    got = sirc_with(2.0, 1.0).predict_from_features(feats, logits).confidence
    torch.testing.assert_close(got, torch.tensor([math.log(2), math.log(4) - math.log(1 + math.exp(-2))]))
    h = math.log(4) - 0.75 * ln3
    got = sirc_with(2.0, 1.0, s1="entropy").predict_from_features(feats[:1], logits[:1]).confidence
    torch.testing.assert_close(got, torch.tensor([-math.log(h) - math.log(2)]))


def test_sirc_residual_hand_computed():
    # last layer W = I, b = 0 -> origin u = 0. Validation features (+-2, 0), (0, +-1): sum f f^T = diag(8, 2), dim 1
    # keeps e1, so the residual is the e2 coordinate: S2 = -|f_2| = 0, 0, -1, -1 -> mean -1/2, std (n - 1)
    # sqrt(4 (1/2)^2 / 3) = 1/sqrt 3 -> a = -1/2 - sqrt 3, b = sqrt 3.
    # feature (1, 2), logits (ln 3, 0): S2 = -2, -b (S2 - a) = -sqrt 3 (sqrt 3 - 3/2) = -3 + 3 sqrt 3 / 2;
    # confidence log 4 - log(1 + exp(-3 + 3 sqrt 3 / 2))
    val = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    space = residual_space(val, torch.eye(2), torch.zeros(2), 1)
    state = sirc_parameters(val, 3.0, space)
    r3 = math.sqrt(3)
    torch.testing.assert_close(state["a"], torch.tensor([-0.5 - r3], dtype=torch.float64))
    torch.testing.assert_close(state["b"], torch.tensor([r3], dtype=torch.float64))
    cls = METHODS.get("sirc")
    m = cls(cls.Config(s2="residual"), num_classes=2)
    m.model = torch.nn.Identity()
    m._set_state(state)
    got = m.predict_from_features(torch.tensor([[1.0, 2.0]]), torch.tensor([[math.log(3), 0.0]])).confidence
    torch.testing.assert_close(got, torch.tensor([math.log(4) - math.log(1 + math.exp(-3 + 1.5 * r3))]))


def test_sirc_residual_dim_is_checked_before_training():
    cls = METHODS.get("sirc")
    assert cls.preflight(cls.Config(s2="residual"), create_backbone("lenet", 10), 1000)["dim_used"] == 25
    with pytest.raises(UsageError, match=r"sirc.dim=50 must be between 1 and the feature dimension - 1 \(49\)"):
        cls.preflight(cls.Config(s2="residual", dim=50), create_backbone("lenet", 10), 1000)


def test_sirc_ranks_as_the_paper_product_and_the_authors_log_form():
    # paper: C = -(1 - MSP)(1 + exp(-b (S2 - a))); the authors' code returns -log(1 - MSP) - logaddexp(0, -b(S2 - a)),
    # i.e. -log(-C). Ours equals that on moderate logits and so ranks exactly as C.
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(100, 10, generator=g) * 2
    feats = torch.rand(100, 6, generator=g) * 3
    a, b = 8.0, 0.7
    msp = logits.double().softmax(1).max(1).values
    s2 = feats.double().abs().sum(1)
    paper = -(1 - msp) * (1 + torch.exp(-b * (s2 - a)))
    got = sirc_with(a, b).predict_from_features(feats, logits).confidence.double()
    torch.testing.assert_close(got, -torch.log(-paper), rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argsort(), paper.argsort())


# --- pnorm --------------------------------------------------------------------------------------------------------

def test_maxlogit_pnorm_hand_computed():
    # logits (3, 0, 0): centred (2, -1, -1). p = 1: 2 / 4; p = 2: 2 / sqrt 6; p = 0: ||.||_0 counts the 3 non-zero
    # entries -> 2 / 3. Not centred, p = 2: 3 / 3 = 1.
    z = torch.tensor([[3.0, 0.0, 0.0]])
    for p, want in [(1.0, 0.5), (2.0, 2 / math.sqrt(6)), (0.0, 2 / 3)]:
        torch.testing.assert_close(maxlogit_pnorm(z, p), torch.tensor([want], dtype=torch.float64))
    torch.testing.assert_close(maxlogit_pnorm(z, 2.0, centralize=False), torch.tensor([1.0], dtype=torch.float64))
    cls = METHODS.get("pnorm")
    m = cls(cls.Config(p=2.0), num_classes=3)
    m.p_used = 2.0
    torch.testing.assert_close(m.predict_from_logits(z).confidence, torch.tensor([2 / math.sqrt(6)]))


def test_pnorm_chooses_p_by_validation_aurc():
    # two validation samples, class 0 predicted for both. R (right, label 0) = (1.2, -0.5, -0.7), already centred;
    # W (wrong, label 1) = (4, 2, -6), centred (mean 0) as well.
    # MSP: R 3.32 / (3.32 + 0.607 + 0.497) = 0.751; W 54.6 / (54.6 + 7.39 + 0.0025) = 0.881 -> W first.
    # p = 0: R 1.2 / 3 = 0.4, W 4 / 3 -> W first.  p = 1: R 1.2 / 2.4 = 0.5, W 4 / 12 = 1/3 -> R first.
    # p = 2: R 1.2 / sqrt 2.18 = 0.81, W 4 / sqrt 56 = 0.53 -> R first.
    # AURC (2 samples, 1 error): W first -> mean(1, 1/2) = 75%; R first -> mean(0, 1/2) = 25%.
    # Candidates in order MSP (75), p0 (75), p1 (25), p2 (25): a strict improvement is needed to move on, so p = 1;
    # grid {0} alone: p0 does not beat MSP -> MSP; without the MSP: p = 0.
    logits = torch.tensor([[1.2, -0.5, -0.7], [4.0, 2.0, -6.0]])
    correct = torch.tensor([True, False])
    assert choose_p(logits, correct, grid_max=9, msp_fallback=True, centralize=True) == 1.0
    assert choose_p(logits, correct, grid_max=0, msp_fallback=True, centralize=True) == MSP
    assert choose_p(logits, correct, grid_max=0, msp_fallback=False, centralize=True) == 0.0
    # the MSP fallback scores the plain MSP
    cls = METHODS.get("pnorm")
    m = cls(num_classes=3)
    m.p_used = MSP
    torch.testing.assert_close(m.predict_from_logits(logits).confidence, logits.softmax(1).max(1).values)


# --- every hyper-parameter takes effect; bad values are refused -----------------------------------------------------

@pytest.fixture(scope="module")
def fitted_lenet(tiny, tmp_path_factory, tiny_ctx):
    ctx = dataclasses.replace(tiny_ctx, cache=CheckpointCache(tmp_path_factory.mktemp("cache")))

    def fit(name: str, **cfg):
        cls = METHODS.get(name)
        return cls(cls.Config(**cfg), backbone="lenet").fit(tiny[0], tiny[1], ctx)

    return fit


CHANGES = [("doctor", "variant", "beta"), ("doctor", "temperature", 3.0), ("relu", "lbd", 0.9),
           ("relu", "temperature", 3.0), ("sirc", "s1", "entropy"), ("sirc", "sigmas", 0.5),
           ("sirc", "s2", "residual"), ("sirc", "dim", 10), ("pnorm", "p", 5.0),
           ("pnorm", "grid_max", 0), ("pnorm", "msp_fallback", False), ("pnorm", "centralize", False)]
# options that act only in another setting (sirc.dim with the residual) or whose effect depends on what the
# validation split picks (pnorm): compared from that setting
BASES = {("sirc", "dim"): {"s2": "residual"}, ("pnorm", "grid_max"): {"msp_fallback": False},
         ("pnorm", "msp_fallback"): {"grid_max": 0},
         ("pnorm", "centralize"): {"p": 1.0}}


def test_every_hyperparameter_is_covered():
    listed = {(n, o) for n, o, _ in CHANGES}
    assert listed == {(n, f.name) for n in SCORERS for f in dataclasses.fields(METHODS.get(n).Config)}


@pytest.mark.parametrize(("name", "option", "value"), CHANGES)
def test_hyperparameter_changes_scores(name, option, value, fitted_lenet, tiny):
    base = BASES.get((name, option), {})
    assert value != getattr(METHODS.get(name).Config(**base), option)
    x = tiny[2].images[:64]
    a = fitted_lenet(name, **base).predict(x).confidence
    b = fitted_lenet(name, **{**base, option: value}).predict(x).confidence
    assert not torch.allclose(a, b), f"{name}.{option}={value} left the scores unchanged"


@pytest.mark.parametrize(("name", "cfg", "match"), [
    ("doctor", {"variant": "gamma"}, "doctor.variant 'gamma' is not one of"),
    ("doctor", {"temperature": 0.0}, "doctor.temperature"), ("relu", {"lbd": 1.5}, "relu.lbd"),
    ("sirc", {"s1": "energy"}, "sirc.s1"), ("sirc", {"s2": "knn"}, "sirc.s2"), ("pnorm", {"p": -2.0}, "pnorm.p"),
    ("pnorm", {"grid_max": -1}, "pnorm.grid_max"),
])
def test_bad_options_are_refused(name, cfg, match):
    with pytest.raises(UsageError, match=match):
        METHODS.get(name).Config(**cfg)
