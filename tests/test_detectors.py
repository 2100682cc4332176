"""The post-hoc OOD detectors: hand-computed cases on a few 2-D points (every expected value is worked out in the
comments), each hyper-parameter changes the scores, cross-checks against pytorch-ood / the paper formulas, and the
one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.cache import CheckpointCache
from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.features import FeatureScorer, linear_head, require_features

DETECTORS = ["mahalanobis", "rmd", "knn", "odin", "vim", "react", "ash", "gen", "dice", "scale"]


class Toy(nn.Module):
    """A 'backbone' whose features are the input's first F pixels and whose head is the linear layer (w, b)."""

    def __init__(self, w: list[list[float]], b: list[float]):
        super().__init__()
        self.fc = nn.Linear(len(w[0]), len(w))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(w))
            self.fc.bias.copy_(torch.tensor(b))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.fc.in_features]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def on_features(name: str, train_f, labels=None, w=None, b=None, **cfg) -> FeatureScorer:
    """A detector fitted on hand-made training features, with the Toy head (w, b) (identity by default)."""
    cls = METHODS.get(name)
    m = cls(cls.Config(**cfg), num_classes=2)
    f = torch.tensor(train_f, dtype=torch.float32)
    y = torch.zeros(len(f), dtype=torch.long) if labels is None else torch.tensor(labels)
    dim = f.shape[1]
    w = w or torch.eye(dim).tolist()
    m.model = Toy(w, b or [0.0] * len(w))
    cls.derived(m.config, dim, len(f)) if issubclass(cls, FeatureScorer) else None  # the checks _fit runs
    state: dict[str, torch.Tensor] = {}
    if cls.needs_linear_head:
        state["w"], state["b"] = linear_head(m.model, dim, name)
    if cls.fits_on_train:
        state.update(m.fit_features(f, y, state))
    m._set_state(state)
    return m


def conf(m: FeatureScorer, test_f) -> torch.Tensor:
    f = torch.tensor(test_f, dtype=torch.float32)
    return m.predict_from_features(f, m.model.forward_head(f).detach()).confidence


# Two classes of two points each: class 0 at (-1, 0), (1, 0) (mean (0, 0)), class 1 at (4, -1), (4, 1) (mean (4, 0)).
# Within-class scatter S = diag(1 + 1, 1 + 1) = diag(2, 2) (+1e-6 I): pytorch-ood's S is N times the covariance.
TWO_CLASSES = [[-1.0, 0.0], [1.0, 0.0], [4.0, -1.0], [4.0, 1.0]]
TWO_LABELS = [0, 0, 1, 1]


def test_mahalanobis_hand_computed():
    m = on_features("mahalanobis", TWO_CLASSES, TWO_LABELS)
    # (0, 2): d0 = (0 + 4) / 2 = 2, d1 = (16 + 4) / 2 = 10 -> -1/2 * 2 = -1
    # (2, 0): d0 = 4 / 2 = 2 = d1 -> -1;  (4, 0): d1 = 0 -> 0;  (1, 0): d0 = 1 / 2 -> -1/4
    torch.testing.assert_close(conf(m, [[0, 2], [2, 0], [4, 0], [1, 0]]), torch.tensor([-1.0, -1.0, 0.0, -0.25]),
                               atol=1e-5, rtol=1e-5)


def test_mahalanobis_is_the_paper_score_over_2n_on_real_features(fitted_lenet, tiny):
    """Paper: M(x) = max_k -(f - mu_k)^T Sigma^-1 (f - mu_k), Sigma = the tied covariance (float64 numpy here);
    bench's confidence is M / (2N) (pytorch-ood's scatter matrix): same ranking."""
    m, f_train, y_train = fitted_lenet("mahalanobis")
    f_test, logits = m.features(tiny[2].images)
    x, y = f_train.double().numpy(), y_train.numpy()
    mus = np.stack([x[y == k].mean(0) for k in range(10)])
    sigma = sum((x[y == k] - mus[k]).T @ (x[y == k] - mus[k]) for k in range(10)) / len(x)
    prec = np.linalg.inv(sigma + 1e-6 / len(x) * np.eye(len(sigma)))
    t = f_test.double().numpy()
    d = np.stack([np.einsum("ij,jk,ik->i", t - mu, prec, t - mu) for mu in mus], 1)
    paper = -d.min(1)
    ours = m.predict_from_features(f_test, logits).confidence.double().numpy()
    np.testing.assert_allclose(ours * 2 * len(x), paper, rtol=2e-3, atol=1e-3 * np.abs(paper).max())


def test_rmd_hand_computed():
    m = on_features("rmd", TWO_CLASSES, TWO_LABELS)
    # background: mean of the 4 points (2, 0); deviations (-3,0), (-1,0), (2,-1), (2,1): S0 = diag(18, 2)
    # (0, 2): d0 = 2, d1 = 10, background 4/18 + 4/2 = 20/9 -> min(2, 10) - 20/9 = -2/9 -> confidence 2/9
    # (2, 0): d0 = d1 = 2, background 0 -> confidence -2
    torch.testing.assert_close(conf(m, [[0, 2], [2, 0]]), torch.tensor([2 / 9, -2.0]), atol=1e-5, rtol=1e-5)


def test_knn_hand_computed():
    train = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]
    # normalised: (1,0), (0,1), (r,r) with r = 1/sqrt2, (-1,0); the test point (2, 0) normalises to (1, 0):
    # distances 0, sqrt(2 - 2r) = sqrt(2 - sqrt2), sqrt2, 2 in that order
    expected = {1: 0.0, 2: math.sqrt(2 - math.sqrt(2)), 3: math.sqrt(2), 4: 2.0}
    for k, dist in expected.items():
        torch.testing.assert_close(conf(on_features("knn", train, k=k), [[2.0, 0.0]]), torch.tensor([-dist]),
                                   atol=1e-4, rtol=1e-4)


def test_vim_hand_computed():
    # W = I, b = 0 -> u = 0; training features (2,0), (-2,0), (0,1), (0,-1): covariance about u diag(2, 1/2), so
    # dim = 1 keeps e1 and the residual is |f_2|. Train residuals 0, 0, 1, 1 (mean 1/2); max logits 2, 0, 1, 0
    # (mean 3/4): alpha = 3/2. (1, 2): log(e + e^2) - 3/2 * 2;  (3, 0): log(e^3 + 1) - 0
    m = on_features("vim", [[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dim=1)
    expected = torch.tensor([math.log(math.e + math.e**2) - 3.0, math.log(math.e**3 + 1)])
    torch.testing.assert_close(conf(m, [[1.0, 2.0], [3.0, 0.0]]), expected, atol=1e-5, rtol=1e-5)


def test_react_hand_computed():
    train = [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]  # activations 0..9
    # 90th percentile of 0..9 (linear interpolation): position 8.1 -> 8.1; 50th: 4.5. Test (10, 1), W = I:
    # clipped (8.1, 1) -> log(e^8.1 + e);  at p = 0.5: (4.5, 1) -> log(e^4.5 + e)
    for p, c in [(0.9, 8.1), (0.5, 4.5)]:
        m = on_features("react", train, percentile=p)
        torch.testing.assert_close(conf(m, [[10.0, 1.0]]), torch.tensor([math.log(math.exp(c) + math.e)]))


# ASH / SCALE: one image with features (1, 2, 3, 4); head logits = (f1, f3) (W = [[1,0,0,0], [0,0,1,0]], b = 0)
HEAD_13 = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]


def test_ash_hand_computed():
    # percentile 0.5 keeps the top 2 activations (3, 4): s1 = 10, s2 = 7
    lse = lambda a, b: math.log(math.exp(a) + math.exp(b))  # noqa: E731
    cases = {"ash-p": lse(0, 3),  # (0, 0, 3, 4) -> logits (0, 3)
             "ash-b": lse(0, 5),  # kept ones set to s1 / 2 = 5 -> logits (0, 5)
             "ash-s": lse(0, 3 * math.exp(10 / 7))}  # (0, 0, 3, 4) * e^(10/7) -> logits (0, 3 e^(10/7))
    for variant, expected in cases.items():
        m = on_features("ash", [[0.0] * 4], w=HEAD_13, b=[0.0, 0.0], variant=variant, percentile=0.5)
        torch.testing.assert_close(conf(m, [[1.0, 2.0, 3.0, 4.0]]), torch.tensor([expected]))


def test_scale_hand_computed():
    # percentile 0.5: s2 = 3 + 4 = 7, s1 = 10; nothing pruned, all scaled by e^(10/7): logits (e^(10/7), 3 e^(10/7))
    m = on_features("scale", [[0.0] * 4], w=HEAD_13, b=[0.0, 0.0], percentile=0.5)
    s = math.exp(10 / 7)
    torch.testing.assert_close(conf(m, [[1.0, 2.0, 3.0, 4.0]]), torch.tensor([math.log(math.exp(s) + math.exp(3 * s))]))


def test_dice_hand_computed():
    w, b = [[1.0, 2.0], [3.0, -1.0]], [0.5, 0.0]
    train = [[0.0, 1.0], [2.0, 3.0]]  # mean activation (1, 2): contributions [[1, 4], [3, -2]]
    # p = 0.5: quantile of (-2, 1, 3, 4) at 0.5 = 2 -> keep [[0, 2], [3, 0]]; f = (1, 1): logits (2.5, 3)
    # p = 0.25: quantile at position 0.75 = -2 + 0.75 * 3 = 0.25 -> keep [[1, 2], [3, 0]]: logits (3.5, 3)
    for p, logits in [(0.5, (2.5, 3.0)), (0.25, (3.5, 3.0))]:
        m = on_features("dice", train, w=w, b=b, p=p)
        torch.testing.assert_close(conf(m, [[1.0, 1.0]]), torch.tensor([math.log(sum(math.exp(v) for v in logits))]))


def gen_conf(logits, **cfg) -> torch.Tensor:
    cls = METHODS.get("gen")
    return cls(cls.Config(**cfg)).predict_from_logits(torch.tensor(logits)).confidence


def test_gen_hand_computed():
    # (0, 0): p = (1/2, 1/2), G = 2 (1/4)^0.1;  (ln3, 0): p = (3/4, 1/4), G = 2 (3/16)^0.1;  M = 1: the top term only
    torch.testing.assert_close(gen_conf([[0.0, 0.0], [math.log(3), 0.0]]),
                               torch.tensor([-2 * 0.25**0.1, -2 * (3 / 16) ** 0.1]))
    torch.testing.assert_close(gen_conf([[math.log(3), 0.0]], M=1), torch.tensor([-(3 / 16) ** 0.1]))
    torch.testing.assert_close(gen_conf([[math.log(3), 0.0]], gamma=1.0), torch.tensor([-2 * 3 / 16]))


def test_gen_pytorch_ood_clamp_ties():
    """The defect that made us write GEN: pytorch-ood clamps p to [1e-7, 1 - 1e-7], so logit gaps of 20 and 40 get
    the same score; the paper's formula separates them. Two classes, gap g: p1 p2 = e^g / (1 + e^g)^2, so
    G = 2 exp(gamma (g - 2 log(1 + e^g)))."""
    from pytorch_ood.detector import GEN as PyGEN

    logits = torch.tensor([[20.0, 0.0], [40.0, 0.0]])
    theirs = PyGEN.score(logits, gamma=0.1)
    assert theirs[0] == theirs[1], "pytorch-ood no longer ties these; re-check whether its GEN can be used"
    g = torch.tensor([20.0, 40.0], dtype=torch.float64)
    paper = -2 * torch.exp(0.1 * (g - 2 * torch.log1p(torch.exp(g))))
    torch.testing.assert_close(gen_conf(logits.tolist()).double(), paper, rtol=1e-5, atol=0)


def test_gen_matches_pytorch_ood_where_it_does_not_clamp():
    """On moderate logits pytorch-ood's GEN (a mean over the classes) is ours (a sum) divided by C."""
    from pytorch_ood.detector import GEN as PyGEN

    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 2
    torch.testing.assert_close(gen_conf(logits.tolist()), -10 * PyGEN.score(logits, gamma=0.1), rtol=1e-5, atol=1e-6)


def odin_conf(x, **cfg) -> torch.Tensor:
    cls = METHODS.get("odin")
    m = cls(cls.Config(**cfg), num_classes=2)
    m.model = Toy([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # logits = the two pixels
    return m.predict(torch.tensor(x).view(-1, 1, 1, 2)).confidence


def test_odin_hand_computed():
    # x = (0.5, 0.2): class 0 predicted; CE = log(1 + e^((x2 - x1) / T)) falls with x1 and rises with x2, so
    # x' = x - eps * (-1, +1) = (0.5 + eps, 0.2 - eps). eps = 0.1, T = 1: max softmax(0.6, 0.1) = 1 / (1 + e^-0.5);
    # T = 2: softmax((0.6, 0.1) / 2) -> 1 / (1 + e^-0.25);  eps = 0: 1 / (1 + e^-0.3)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    torch.testing.assert_close(odin_conf([[0.5, 0.2]], eps=0.1, temperature=1.0), torch.tensor([sig(0.5)]))
    torch.testing.assert_close(odin_conf([[0.5, 0.2]], eps=0.1, temperature=2.0), torch.tensor([sig(0.25)]))
    torch.testing.assert_close(odin_conf([[0.5, 0.2]], eps=0.0, temperature=1.0), torch.tensor([sig(0.3)]))


# --- every hyper-parameter takes effect, on a lenet fitted on the tiny slices --------------------------------

@pytest.fixture(scope="module")
def lenet_ctx(tmp_path_factory, tiny_ctx):
    """tiny_ctx with a checkpoint cache, so the baseline and its training features are computed once here."""
    return dataclasses.replace(tiny_ctx, cache=CheckpointCache(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def fitted_lenet(tiny, lenet_ctx):
    def fit(name: str, **cfg):
        cls = METHODS.get(name)
        m = cls(cls.Config(**cfg), backbone="lenet").fit(tiny[0], tiny[1], lenet_ctx)
        key = f"features-{m.baseline_key}"
        hit = lenet_ctx.cache.get(key) if cls.uses_features and cls.fits_on_train else None
        return m, (hit or {}).get("features"), (hit or {}).get("labels")

    return fit


# (method, option, another value): every field of every detector's Config is listed (checked below)
CHANGES = [("knn", "k", 5), ("knn", "sample", 0.5), ("vim", "dim", 10), ("react", "percentile", 0.5),
           ("ash", "variant", "ash-p"),
           ("ash", "percentile", 0.65), ("scale", "percentile", 0.5), ("dice", "p", 0.5), ("gen", "gamma", 1.0),
           ("gen", "M", 2), ("odin", "temperature", 1.0), ("odin", "eps", 0.01)]


def test_every_hyperparameter_is_covered():
    listed = {(n, o) for n, o, _ in CHANGES}
    fields = {(n, f.name) for n in DETECTORS for f in dataclasses.fields(METHODS.get(n).Config)}
    assert fields == listed  # mahalanobis and rmd have none


@pytest.mark.parametrize(("name", "option", "value"), CHANGES)
def test_hyperparameter_changes_scores(name, option, value, fitted_lenet, tiny):
    default = getattr(METHODS.get(name).Config(), option)
    assert value != default
    x = tiny[2].images[:64]
    a = fitted_lenet(name)[0].predict(x).confidence
    b = fitted_lenet(name, **{option: value})[0].predict(x).confidence
    assert not torch.allclose(a, b), f"{name}.{option}={value} left the scores unchanged"


def test_training_features_are_fitted_once_per_baseline(fitted_lenet, lenet_ctx, monkeypatch):
    """The second detector of a baseline reads the cached training features instead of a new pass."""
    fitted_lenet("knn")
    import bench.methods.core.features as features

    monkeypatch.setattr(features, "map_batches", lambda *a, **k: pytest.fail("training features recomputed"))
    fitted_lenet("mahalanobis")
    fitted_lenet("vim")


# --- bad input ----------------------------------------------------------------------------------------------

def test_knn_sample_keeps_a_seeded_subset_of_the_bank():
    """sample = 0.5 of 4 points keeps 2 of them (which 2 follows the method's seed); the score is then the exact
    k-NN distance against those 2 alone."""
    train = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]
    m = on_features("knn", train, k=1, sample=0.5)
    kept = m.state["train_features"]
    assert kept.shape == (2, 2) and all(row.tolist() in train for row in kept)
    unit = torch.nn.functional.normalize(kept, dim=1)
    query = torch.tensor([[2.0, 0.0]])  # normalises to (1, 0)
    expected = -(unit - torch.tensor([1.0, 0.0])).norm(dim=1).min()
    torch.testing.assert_close(conf(m, query.tolist()), expected.reshape(1), atol=1e-5, rtol=1e-5)
    assert torch.equal(on_features("knn", train, k=1, sample=0.5).state["train_features"], kept)  # same seed
    assert on_features("knn", train, k=1, sample=1.0).state["train_features"].shape == (4, 2)
    with pytest.raises(UsageError, match=r"knn.k=3 is larger than the 2 training features knn.sample=0.5 keeps of 4"):
        on_features("knn", train, k=3, sample=0.5)


def test_knn_k_larger_than_training_split_is_refused():
    with pytest.raises(UsageError, match=r"knn.k=5 is larger than the training split \(4 images\)"):
        on_features("knn", [[1.0, 0.0]] * 4, k=5)
    with pytest.raises(UsageError, match="knn.k=5000 is larger than the training split"):
        METHODS.get("knn").preflight(METHODS.get("knn").Config(k=5000), create_backbone("lenet", 10), 1000)


@pytest.mark.parametrize(("name", "cfg", "match"), [
    ("knn", {"k": 0}, "knn.k must be >= 1"), ("knn", {"sample": 0.0}, "knn.sample"),
    ("knn", {"sample": 1.5}, "knn.sample"), ("ash", {"variant": "ash-x"}, "ash.variant 'ash-x' is not one of"),
    ("ash", {"percentile": 1.0}, "ash.percentile"), ("react", {"percentile": 0.0}, "react.percentile"),
    ("scale", {"percentile": -0.1}, "scale.percentile"), ("dice", {"p": 1.0}, "dice.p"),
    ("gen", {"gamma": 0.0}, "gen.gamma"), ("gen", {"M": 0}, "gen.M"), ("odin", {"temperature": 0.0}, "odin.temp"),
    ("odin", {"eps": -1.0}, "odin.eps"), ("vim", {"dim": -1}, "vim.dim")])
def test_bad_options_are_one_line_errors(name, cfg, match):
    with pytest.raises(UsageError, match=match) as e:
        METHODS.get(name).Config(**cfg)
    assert "\n" not in str(e.value)


def test_vim_dim_not_below_feature_dimension():
    with pytest.raises(UsageError, match=r"vim.dim=50 must be between 1 and the feature dimension - 1 \(49\)"):
        METHODS.get("vim").preflight(METHODS.get("vim").Config(dim=50), create_backbone("lenet", 10), 1000)
    lenet = create_backbone("lenet", 10)
    assert METHODS.get("vim").preflight(METHODS.get("vim").Config(), lenet, 1000) == {"dim": 0, "dim_used": 25}


def test_backbone_without_penultimate_features_is_refused():
    class NoFeatures(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    class Abstract(Toy):
        def forward_features(self, x):
            raise NotImplementedError

    with pytest.raises(UsageError, match="knn needs penultimate features, but NoFeatures has no forward_features"):
        require_features(NoFeatures(), "knn")
    with pytest.raises(UsageError, match=r"vim needs penultimate features \(N, F\) from Abstract.forward_features"):
        require_features(Abstract([[1.0, 0.0]], [0.0]), "vim")


def test_nonlinear_head_is_refused_for_vim_and_dice():
    class Nonlinear(Toy):
        def forward_head(self, f):
            return torch.tanh(self.fc(f))

    with pytest.raises(UsageError, match="dice needs a linear last layer"):
        linear_head(Nonlinear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), 2, "dice")


# --- in a run -----------------------------------------------------------------------------------------------

RUN = ["run", "--profile", "smoke", "--device", "cpu", "--no-progress", "--datasets", "mnist,ood:uniform",
       "--set", "split.max_train=256", "--set", "eval.max_eval=128", "--set", "eval.cost_images=64"]


@pytest.mark.parametrize(("args", "msg"), [
    (["--methods", "knn", "--set", "knn.k=300"], "knn.k=300 is larger than the training split (256 images)"),
    (["--methods", "knn", "--set", "knn.foo=1"], "unknown key knn.foo (valid: knn.k, knn.sample)"),
    (["--methods", "knn", "--set", "knn.sample=0.01"],
     "knn.k=50 is larger than the 3 training features knn.sample=0.01 keeps of 256"),
    (["--methods", "ash", "--set", "ash.variant=ash-q"], "ash.variant 'ash-q' is not one of ash-s, ash-p, ash-b"),
    (["--methods", "vim", "--set", "vim.dim=60"], "vim.dim=60 must be between 1 and the feature dimension - 1"),
])
def test_bad_detector_input_fails_before_training(args, msg, tmp_path, capsys, monkeypatch):
    from bench.cli import main
    from bench.methods.core import base

    monkeypatch.setattr(base.FitContext, "train_baseline", lambda *a, **k: pytest.fail("trained before the check"))
    assert main([*RUN, *args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


@pytest.mark.e2e
def test_run_shares_one_feature_pass_and_records_hyperparameters(tmp_path, monkeypatch):
    import csv
    import json

    from bench.cli import main
    from bench.methods.core.base import ConfidenceMethod

    passes = []
    features = ConfidenceMethod.features
    monkeypatch.setattr(ConfidenceMethod, "features",
                        lambda self, x, **k: passes.append(len(x)) or features(self, x, **k))
    monkeypatch.setattr(ConfidenceMethod, "logits", lambda *a, **k: pytest.fail("a second, logits-only pass"))
    run = tmp_path / "r"
    assert main([*RUN, "--methods", "msp,knn,react,gen", "--set", "knn.k=7", "--out", str(run),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    assert passes == [128, 128]  # mnist and ood:uniform, once each, for all four methods
    hp = json.loads((run / "manifest.json").read_text())["hyperparameters"]
    assert hp["knn"] == {"k": 7, "sample": 1.0, "bank_used": 256} and hp["react"] == {"percentile": 0.9}
    assert hp["gen"] == {"gamma": 0.1, "M": 100}
    with open(run / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["eval_set"] == "mnist"]
    acc = {r["method"]: r["value"] for r in rows if r["metric"] == "accuracy"}
    auroc = {r["method"]: r["value"] for r in rows if r["metric"] == "auroc"}
    assert len(set(acc.values())) == 1, "detectors keep the baseline's predictions"
    assert len(set(auroc.values())) == 4, "but each scores its own confidence"
