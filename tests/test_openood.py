"""OpenOOD's MNIST protocol: the lenet5 backbone, the recipe's pieces in the training template (Nesterov, cosine per
iteration, flip + crop augmentation), cache keys of older recipes unchanged, the openood profile, and mdsens."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.config import load_profile, resolve
from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import FitContext
from bench.methods.core.training import (
    COSINE_ITER_MIN_LR,
    Loop,
    Stepper,
    TrainRecipe,
    augment_batch,
    fit_loop,
    generator,
    supervised_step,
)
from bench.methods.mdsens import MDSEnsConfig, fit_combination, fit_gaussians, squared_distances
from bench.utils import stable_hash, to_jsonable

CONFIGS = {n: METHODS.get(n).Config for n in METHODS.names()}


# --- lenet5 ---------------------------------------------------------------------------------------------------
def test_lenet5_parameter_count_is_openoods():
    # openood/networks/lenet.py: conv 3->6 5x5 (pad 2), conv 6->16 5x5, conv 16->120 5x5, fc 120->84, fc 84->10
    expected = (3 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 120 * 25 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert expected == 62006
    assert sum(p.numel() for p in create_backbone("lenet5").parameters()) == expected


def test_lenet5_is_openoods_net_on_normalised_rgb():
    """Grey [0, 1] images through lenet5 == OpenOOD's network fed Normalize(0.5, 0.5) of the RGB-converted image."""
    torch.manual_seed(0)
    net = create_backbone("lenet5").eval()
    ref = nn.Sequential(nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10)).eval()
    src = [net.block1[0], net.block2[0], net.block3[0], net.classifier1, net.fc]
    dst = [ref[0], ref[3], ref[6], ref[9], ref[11]]
    for a, b in zip(src, dst):
        b.load_state_dict(a.state_dict())
    x = torch.rand(5, 1, 28, 28)
    rgb = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(rgb), atol=1e-5)
        feats = net.feature_list(x)
        assert [tuple(f.shape) for f in feats] == [(5, 6, 14, 14), (5, 16, 5, 5), (5, 120), (5, 84)]
        assert torch.equal(net.forward_features(x), feats[-1]) and bool((feats[-1] >= 0).all())  # post-ReLU
        assert torch.allclose(net(x.repeat(1, 3, 1, 1)), net(x), atol=1e-6)  # an RGB input of grey is the same
    assert net.num_features == 84


# --- the recipe's pieces ----------------------------------------------------------------------------------------
def test_old_recipes_keep_their_cache_keys():
    """The quick profile's baseline and msp keys as computed by the code before nesterov/augment existed
    (commit b575d34): a recipe that does not use the new fields must find its old checkpoints."""
    cfg = resolve([load_profile("quick")], CONFIGS)
    ctx = FitContext(recipe=cfg.train, split_id="mnist-train:val0.1:seed0:max0")
    assert ctx.baseline_key("lenet", 10, 0) == "baseline-0a323444263372e3"
    assert METHODS.get("msp")(backbone="lenet", seed=0).cache_key(ctx) == "msp-db4c4f6ff44607f9"
    assert FitContext(recipe=TrainRecipe(), split_id="tiny-1024-256").baseline_key("lenet", 10, 0) == \
        "baseline-5f3e44213c0f4e7d"
    # the new fields count once they are used
    for change in ({"optimizer": "sgd", "nesterov": True}, {"augment": "flip_crop4"}, {"compile": "default"}):
        other = FitContext(recipe=TrainRecipe(**{**vars(cfg.train), **change}), split_id=ctx.split_id)
        assert other.baseline_key("lenet", 10, 0) != ctx.baseline_key("lenet", 10, 0)
    assert stable_hash(TrainRecipe(nesterov=False)) == stable_hash(
        {k: v for k, v in vars(TrainRecipe()).items() if k not in ("nesterov", "augment", "compile")})
    # a saved run config of an old recipe reads as before (resume, report and compare match configs)
    new = {"nesterov", "augment", "compile"}
    assert set(to_jsonable(cfg)["train"]) == {f.name for f in dataclasses.fields(TrainRecipe)} - new
    assert to_jsonable(resolve([load_profile("openood")], CONFIGS))["train"]["augment"] == "flip_crop4"


def test_nesterov_reaches_sgd_and_is_refused_elsewhere():
    p = [nn.Parameter(torch.zeros(2))]
    st = Stepper(p, TrainRecipe(optimizer="sgd", lr=0.1, nesterov=True), 10)
    assert st.opt.param_groups[0]["nesterov"] is True
    with pytest.raises(UsageError, match="nesterov"):
        TrainRecipe(optimizer="adam", nesterov=True)


def test_cosine_iter_follows_openoods_formula_per_update():
    recipe = TrainRecipe(optimizer="sgd", lr=0.1, epochs=3, scheduler="cosine_iter")
    w = nn.Parameter(torch.zeros(1))
    st = Stepper([w], recipe, n_batches=4)  # 12 updates in all
    lrs = []
    for _ in range(12):
        lrs.append(st.opt.param_groups[0]["lr"])
        st((w * 0).sum())
    lo = COSINE_ITER_MIN_LR
    expected = [lo + (0.1 - lo) * 0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[0] == pytest.approx(0.1) and lrs[6] == pytest.approx((0.1 + lo) / 2)
    assert st.opt.param_groups[0]["lr"] == pytest.approx(lo)  # after the last update: the floor


def test_augment_is_flip_then_crop_from_a_zero_border():
    x = torch.rand(16, 1, 28, 28)
    out = augment_batch(x, "flip_crop4", generator(3))
    g = generator(3)  # the same draws, in the same order, replayed by hand
    flip = torch.rand(16, generator=g) < 0.5
    dy, dx = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    for i in range(16):
        img = x[i].flip(-1) if flip[i] else x[i]
        want = F.pad(img, (4, 4, 4, 4))[:, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28]
        assert torch.equal(out[i], want)
    assert 0 < int(flip.sum()) < 16 and len(set(dy.tolist())) > 1  # the draws vary (seed 3)
    assert torch.equal(augment_batch(x, "flip_crop4", generator(3)), out)  # seeded: reproducible
    g = generator(5)
    assert augment_batch(x, "none", g) is x and torch.equal(g.get_state(), generator(5).get_state())  # no draws


def test_fit_loop_with_the_recipe_is_reproducible(tiny):
    train, val, _ = tiny
    recipe = TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=128,
                         epochs=1, scheduler="cosine_iter", augment="flip_crop4")
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_backbone("lenet5")
        st = Stepper(model.parameters(), recipe, math.ceil(256 / 128))
        fit_loop(model, supervised_step(model, st), train.subset(slice(0, 256)), val.subset(slice(0, 64)), recipe,
                 Loop(torch.device("cpu"), seed=0))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_openood_profile_is_the_recipe():
    cfg = resolve([load_profile("openood")], CONFIGS)
    t = cfg.train
    assert cfg.backbone == "lenet5" and cfg.datasets == ("mnist", "ood:fashion")
    assert (t.optimizer, t.lr, t.momentum, t.nesterov, t.weight_decay) == ("sgd", 0.1, 0.9, True, 5e-4)
    assert (t.batch_size, t.epochs, t.scheduler, t.augment) == (128, 100, "cosine_iter", "flip_crop4")
    assert cfg.eval.max_eval == 0  # the full 10k test sets


# --- mdsens ---------------------------------------------------------------------------------------------------
def test_layer_score_by_hand():
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    precision = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    f = torch.tensor([[0.5, 1.0]])
    # to mu_0: 0.5^2 * 1 + 1^2 * 4 = 4.25; to mu_1: (-1.5)^2 + 4 = 6.25; the score is -1/2 of the smaller
    d = squared_distances(f, means, precision)
    assert d.tolist() == [[4.25, 6.25]]
    assert float(-0.5 * d.min(1).values) == -2.125


def test_tied_gaussians_by_hand():
    f = torch.tensor([[0.0], [2.0], [10.0], [14.0]])
    y = torch.tensor([0, 0, 3, 3])  # class 3 only: absent classes get no mean
    means, precision = fit_gaussians(f, y)
    # means 1 and 12; residuals -1, 1, -2, 2: covariance (1 + 1 + 4 + 4) / 4 = 2.5, precision 0.4
    assert means.tolist() == [[1.0], [12.0]]
    assert precision.tolist() == [[pytest.approx(0.4)]]


def test_combination_by_hand_and_fitted():
    m = METHODS.get("mdsens")()
    m.state = {"means": [], "precisions": [], "weights": torch.tensor([2.0, -1.0]), "bias": torch.tensor(0.5)}
    assert m.combine(torch.tensor([[1.0, 3.0], [0.0, 0.0]])).tolist() == [2 - 3 + 0.5, 0.5]
    # layer 0 separates ID from OOD, layer 1 is noise on another scale: the fit leans on layer 0, and its raw-score
    # weights rank every ID sample above every OOD one
    g = torch.Generator().manual_seed(0)
    s_in = torch.stack([torch.rand(200, generator=g) + 1.0, 1000 * torch.randn(200, generator=g)], 1)
    s_out = torch.stack([torch.rand(200, generator=g) - 1.0, 1000 * torch.randn(200, generator=g)], 1)
    w, b = fit_combination(s_in, s_out, seed=0)
    assert float(w[0]) > 0 and abs(float(w[1])) * 1000 < float(w[0])
    assert float((s_in @ w + b).min()) > float((s_out @ w + b).max())


@pytest.fixture(scope="module")
def fitted_mdsens(tiny, cached_tiny_ctx):
    train, val, _ = tiny
    return METHODS.get("mdsens")(MDSEnsConfig(n_val=128), backbone="lenet5", seed=0).fit(train, val, cached_tiny_ctx)


def test_mdsens_reads_the_block_layers_and_eps_takes_effect(fitted_mdsens, tiny):
    m = fitted_mdsens
    x = tiny[2].images[:64].float() / 255
    assert [mu.shape[1] for mu in m.state["means"]] == [6, 16, 120] and m.state["weights"].shape == (3,)
    with_eps = m.layer_scores(x)
    m.config = MDSEnsConfig(n_val=128, eps=0.0)
    try:
        plain = m.layer_scores(x)
    finally:
        m.config = MDSEnsConfig(n_val=128)
    assert not torch.equal(with_eps, plain)
    # the pre-processing step moves each image towards its closest class mean: the score rises for most images
    assert float((with_eps > plain).float().mean()) > 0.8
    pred = m.predict(x)
    assert torch.allclose(pred.confidence, m.combine(with_eps), atol=1e-4)


def test_mdsens_ranks_errors_lower_on_lenet5(fitted_mdsens, tiny):
    """The contract's direction check, on the backbone whose block layers it reads (the suite runs it on lenet)."""
    test = tiny[2]
    pred = fitted_mdsens.predict(test.images)
    correct = pred.probs.argmax(1) == test.labels
    assert 0 < int(correct.sum()) < len(correct)
    assert float(fitted_mdsens.state["weights"].sum()) > 0
    assert pred.confidence[correct].mean() > pred.confidence[~correct].mean()


def test_mdsens_fgsm_eps_takes_effect(fitted_mdsens, tiny, cached_tiny_ctx):
    train, val, _ = tiny
    other = METHODS.get("mdsens")(MDSEnsConfig(n_val=128, fgsm_eps=0.2), backbone="lenet5", seed=0)
    other.fit(train, val, cached_tiny_ctx)
    assert all(torch.equal(a, b) for a, b in zip(other.state["means"], fitted_mdsens.state["means"]))
    assert not torch.equal(other.state["weights"], fitted_mdsens.state["weights"])
    fewer = METHODS.get("mdsens")(MDSEnsConfig(n_val=64), backbone="lenet5", seed=0).fit(train, val, cached_tiny_ctx)
    assert not torch.equal(fewer.state["weights"], fitted_mdsens.state["weights"])  # n_val takes effect too
    every = METHODS.get("mdsens")(MDSEnsConfig(n_val=128, layers="all"), backbone="lenet5", seed=0)
    every.fit(train, val, cached_tiny_ctx)
    assert [mu.shape[1] for mu in every.state["means"]] == [6, 16, 120, 84] and every.state["weights"].shape == (4,)
