"""TrustGAN: networks (sizes match the reference), losses (hand-computed cases), training mechanics, loading and the
predict command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.cli import main
from bench.errors import UsageError
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.methods.trustgan import TrustGAN, TrustGANConfig, _Trainer
from bench.methods.trustgan_nets import (
    Attacker,
    DilatedConv,
    TrustGANNet,
    attacker_loss,
    confidence_loss,
    count_params,
    decision_diversity_loss,
    minmax_signed,
    output_diversity_loss,
    target_loss,
)
from bench.run.loading import load_method

# Parameter counts of the reference networks (ThalesGroup/trustGAN networks.Net / Gan with the follow-up study's
# size knob: channels 2^0..2^(n-1), FC width 2^(n-1)), measured by instantiating the reference classes.
REFERENCE_PARAMS = {(2, 4): (70, 1483), (3, 4): (317, 1483), (4, 5): (1258, 5628), (5, 7): (4931, 86046)}


@pytest.mark.parametrize("sizes", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_reference(sizes):
    gan, net = sizes
    assert (count_params(Attacker(1, gan)), count_params(TrustGANNet(10, net_size=net))) == REFERENCE_PARAMS[sizes]


def test_net_shapes_and_normalisation():
    torch.manual_seed(0)
    net, gan = TrustGANNet(10, net_size=4).eval(), Attacker(1, 3)
    x = torch.rand(3, 1, 28, 28)
    assert net(x).shape == (3, 10) and gan(x).shape == (3, 1, 28, 28)
    assert gan(x).abs().max() <= 1
    z = minmax_signed(torch.stack([x[0], torch.full_like(x[0], 0.3)]))
    assert z[0].min() == -1 and z[0].max() == 1 and (z[1] == -1).all()  # a constant image maps to -1
    # the normalisation is inside: forward(x) == forward_normalized(minmax(x)), and scale-invariant
    torch.testing.assert_close(net(x), net.forward_normalized(minmax_signed(x)))
    torch.testing.assert_close(net(x), net(0.5 * x + 0.2))


def test_weight_norm_conv_starts_as_plain_conv_with_replicate_padding():
    torch.manual_seed(0)
    conv = DilatedConv(2, 3, dilation=4, weight_norm=True)
    x = torch.rand(1, 2, 9, 9)
    ref = F.conv2d(F.pad(x, (4, 4, 4, 4), mode="replicate"), conv.weight_v, conv.bias, dilation=4)
    torch.testing.assert_close(conv(x), ref)
    with torch.no_grad():
        conv.weight_g.mul_(2.0)  # w = g v / |v|: doubling g doubles the weights
    torch.testing.assert_close(conv(x), 2 * ref)



@pytest.mark.parametrize("size,dilation", [((9, 9), 8), ((9, 7), 16), ((1, 5), 4), ((9, 9), 4), ((9, 9), 7)])
@pytest.mark.parametrize("weight_norm", [True, False])
def test_dilated_conv_equals_padded_conv_with_gradients(size, dilation, weight_norm):
    # d >= size - 1 takes the saturated shortcut (every off-centre tap reads the replicated border); the rest the
    # padded conv. Both must be the padded conv's function, values and gradients, to float64 rounding.
    torch.manual_seed(0)
    conv = DilatedConv(3, 4, dilation=dilation, weight_norm=weight_norm).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    w = torch._weight_norm(conv.weight_v, conv.weight_g, 0) if weight_norm else conv.weight
    ref = F.conv2d(F.pad(x, (dilation,) * 4, mode="replicate"), w, conv.bias, dilation=dilation)
    out = conv(x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    params = [x, *conv.parameters()]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)

# --- losses ---------------------------------------------------------------------------------------------------
def test_cross_entropy_normalised_by_ln_c():
    onehot = F.one_hot(torch.tensor([2, 7]), 10).float()
    assert target_loss("cross-entropy", torch.zeros(2, 10), onehot).item() == pytest.approx(1.0)
    uniform = torch.full((2, 10), 0.1)
    assert target_loss("cross-entropy", torch.zeros(2, 10), uniform).item() == pytest.approx(1.0)  # its minimum
    assert target_loss("cross-entropy", torch.randn(2, 10) * 3, uniform).item() > 1.0


@pytest.mark.parametrize("name,power", [("hinge", 1), ("squared-hinge", 2), ("cubed-hinge", 3)])
def test_hinge_variants(name, power):
    logits = torch.tensor([[1.0, -1.0, 0.2], [0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # signs s = +1 for the true class, -1 elsewhere; terms max(0, 0.5 - s z)^k
    terms = torch.tensor([[0.0, 0.0, 0.7], [0.5, 0.5, 0.5]]) ** power
    assert target_loss(name, logits, target).item() == pytest.approx(terms.mean().item())
    # per-sample mean: repeating the batch does not change the value
    assert target_loss(name, logits.repeat(3, 1), target.repeat(3, 1)).item() == pytest.approx(terms.mean().item())


def test_cauchy_schwarz():
    onehot = F.one_hot(torch.tensor([0]), 3).float()
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    # p uniform, t one-hot: <p,t>/(|p||t|) = (1/3) / (1/sqrt(3)) = 1/sqrt(3) -> -ln = ln(3)/2, / ln 3 = 0.5
    assert target_loss("cauchy-schwarz", logits, onehot).item() == pytest.approx(0.5)
    assert target_loss("cauchy-schwarz", logits, torch.full((1, 3), 1 / 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert target_loss("cauchy-schwarz", torch.tensor([[9.0, 0.0, 0.0]]), onehot).item() < 1e-3


def _looped(z, logits, images):
    """The reference's pair loops, written out."""
    c = logits.shape[1]
    p, lp = logits.softmax(1), logits.log_softmax(1)
    r1 = w1 = r2 = w2 = 0.0
    for i in range(min(c, len(z))):
        for j in range(i):
            w = ((z[i] - z[j]) ** 2).mean()
            r1, w1 = r1 + w / (1 + (-p[i] * lp[j]).sum()), w1 + w
    for i in range(min(10, len(z))):
        for j in range(i):
            w = ((z[i] - z[j]) ** 2).mean()
            r2, w2 = r2 + w / (1 + ((images[i] - images[j]) ** 2).mean()), w2 + w
    return r1 / w1 / (1 + math.log(c)), r2 / w2 / 5.0


def test_attacker_loss_terms_match_the_reference_formulas():
    torch.manual_seed(0)
    z, images, logits = torch.rand(13, 1, 6, 6), torch.rand(13, 1, 6, 6) * 2 - 1, torch.randn(13, 10)
    r1, r2 = _looped(z, logits, images)
    torch.testing.assert_close(decision_diversity_loss(z, logits), r1)
    torch.testing.assert_close(output_diversity_loss(z, images), r2)
    assert confidence_loss(torch.zeros(4, 10)).item() == pytest.approx(1.0)  # -ln(1/C)/ln C
    r0 = (logits.logsumexp(1) - logits.max(1).values).mean() / math.log(10)
    torch.testing.assert_close(attacker_loss(z, images, logits), (r0 + r1 + r2) / 3)


def test_config_validation():
    with pytest.raises(UsageError, match="trustgan.target_loss"):
        TrustGANConfig(target_loss="mse")
    with pytest.raises(UsageError, match="replay_prob"):
        TrustGANConfig(replay_prob=1.5)
    with pytest.raises(UsageError, match="gan_size"):
        TrustGANConfig(gan_size=1)


# --- training mechanics ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(mnist_train):
    return mnist_train.subset(slice(0, 256)), mnist_train.subset(slice(256, 384))


SMALL_CTX = FitContext(recipe=TrainRecipe(batch_size=64, epochs=3, val_every=2))


def test_attacker_step_uses_target_in_eval_mode_and_leaves_it_unchanged():
    torch.manual_seed(0)
    net, gan = TrustGANNet(10, net_size=3), Attacker(1, 2)
    trainer = _Trainer(net, gan, TrustGANConfig(), torch.device("cpu"), 10, torch.Generator().manual_seed(0))
    modes = []
    net.units[0].register_forward_hook(lambda m, i, o: modes.append(m.training))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gan_before = [p.clone() for p in gan.parameters()]
    trainer.attacker_step(torch.Size([16, 1, 28, 28]))
    assert modes == [False] and net.training  # eval during the step, train mode restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(gan_before, gan.parameters()))


def test_fit_series_snapshots_and_budget_rule(small):
    train, val = small
    m = TrustGAN(TrustGANConfig(gan_size=2, epochs=2, batch_size=128), backbone="lenet", seed=0)
    m.fit(train, val, SMALL_CTX)
    log = m.train_log
    assert len(log.epoch_seconds) == 2  # trustgan.epochs overrides the recipe's 3
    assert len(log.losses) == 2 and list(log.val_accuracy) == [2]  # val_every from the recipe; last epoch checked
    extra = log.extra
    assert set(extra) >= {"attacker_loss", "attacker_sample_loss", log.peak_memory_metric}
    assert all(len(v) == 2 for v in extra.values())
    assert math.isnan(extra["attacker_loss"][0]) and math.isfinite(extra["attacker_loss"][1])  # epoch 1: alone
    assert 0.9 < extra["attacker_sample_loss"][1] < 1.5  # CE to uniform, normalised: >= 1, near it
    assert m.attacker is not None and len(m.attacker.units) == 1


def test_snapshot_replay_pool_is_in_memory(small, monkeypatch):
    saves = []
    monkeypatch.setattr(torch, "save", lambda *a, **k: saves.append(a))
    train, _ = small
    torch.manual_seed(0)
    net, gan = TrustGANNet(10, net_size=3), Attacker(1, 2)
    trainer = _Trainer(net, gan, TrustGANConfig(replay_prob=1.0), torch.device("cpu"), 10,
                       torch.Generator().manual_seed(0))
    used = []
    trainer.replayer.register_forward_hook(lambda m, i, o: used.append(True))
    x, y = train.images[:32].float() / 255, train.labels[:32]
    trainer.step(x, y, epoch=2)
    assert used == [True] and len(trainer.snapshots) == 1  # the attacker at the start of epoch 1
    trainer.end_epoch(2)
    assert len(trainer.snapshots) == 3  # + the epoch's best attacker + the attacker at the next epoch's start
    assert saves == []


def test_checkpoint_keeps_attacker(small):
    train, val = small
    m = TrustGAN(TrustGANConfig(gan_size=2, epochs=2), backbone="lenet", seed=0).fit(train, val, SMALL_CTX)
    clone = TrustGAN(TrustGANConfig(gan_size=2), backbone="lenet").load_state_dict(m.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(m.attacker.state_dict().values(),
                                                 clone.attacker.state_dict().values()))


# --- loading and the predict command --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_run(small, tmp_path_factory):
    """A run directory as the runner writes it: manifest, checkpoints index, cached checkpoint."""
    import dataclasses

    from bench.cache import CheckpointCache
    from bench.run.store import RunStore

    train, val = small
    cfg = TrustGANConfig(gan_size=2, epochs=1)
    m = TrustGAN(cfg, backbone="lenet", seed=3).fit(train, val, SMALL_CTX)
    root = tmp_path_factory.mktemp("predict")
    cache = CheckpointCache(root / "cache")
    cache.put("trustgan-abc", {"state": m.state_dict(), "log": dataclasses.asdict(m.train_log)})
    store = RunStore(root / "run")
    store.ensure_writable()
    store.write_manifest({"config": {"backbone": "lenet", "cache_dir": str(root / "cache"),
                                     "method_options": {"trustgan": dataclasses.asdict(cfg)}}})
    store.record_fitted("trustgan", 3, 0, "trustgan-abc", cache.path("trustgan-abc"))
    store.rebuild_indices()  # checkpoints.json, as the runner writes it
    return root, m


def test_load_method_round_trip(fake_run, mnist_test):
    root, m = fake_run
    loaded = load_method(root / "run", "trustgan")
    x = mnist_test.images[:64]
    assert loaded.seed == 3 and loaded.train_log is not None
    assert torch.equal(loaded.predict(x).probs, m.predict(x).probs)
    with pytest.raises(UsageError, match="no fitted msp"):
        load_method(root / "run", "msp")


def test_predict_command_png_npz_idx_and_csv(fake_run, mnist_test, tmp_path, capsys):
    from PIL import Image

    root, m = fake_run
    x = mnist_test.images[:3]
    Image.fromarray(x[0, 0].numpy()).save(tmp_path / "digit.png")
    np.savez(tmp_path / "two.npz", images=x[1:3, 0].numpy())
    idx = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (2, 28, 28)) + x[:2, 0].numpy().tobytes()
    (tmp_path / "two.idx").write_bytes(idx)
    out_csv = tmp_path / "pred.csv"
    rc = main(["predict", "--run", str(root / "run"), "--method", "trustgan", str(tmp_path / "digit.png"),
               str(tmp_path / "two.npz"), str(tmp_path / "two.idx"), "--csv", str(out_csv)])
    assert rc == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 5 and rows[0]["image"].endswith("digit.png")
    expected = m.predict(torch.cat([x, x[:2]]))
    assert [int(r["predicted_class"]) for r in rows] == expected.probs.argmax(1).tolist()
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], expected.confidence.numpy(), rtol=1e-5)
    assert "trustgan (seed 3, fold 0) on 5 image(s)" in capsys.readouterr().out
    assert json.loads((root / "run" / "checkpoints.json").read_text())


def test_compiled_steps_give_the_eager_training_within_noise(small):
    """trustgan.compile: the attacker's, the samples' and the real batch's forward and loss through torch.compile
    (CUDA graphs on a GPU); lenet5 has no dropout, so the compiled training is eager's within floating-point noise.
    The default config keeps the cache key of the checkpoints cached before the option existed."""
    from torch._dynamo.utils import counters

    from bench.utils import stable_hash, to_jsonable

    train, val = small
    fitted = {}
    for mode in ("none", "default"):
        torch._dynamo.reset()
        counters.clear()
        cfg = TrustGANConfig(gan_size=2, epochs=2, batch_size=64, replay_prob=0.5, compile=mode)
        fitted[mode] = TrustGAN(cfg, backbone="lenet5", seed=0).fit(train, val, SMALL_CTX)
        assert (counters["stats"]["unique_graphs"] >= 3) == (mode == "default")  # three step functions compiled
    eager, compiled = fitted["none"], fitted["default"]
    assert compiled.train_log.losses == pytest.approx(eager.train_log.losses, rel=1e-4)
    for k in ("attacker_loss", "attacker_sample_loss"):
        assert compiled.train_log.extra[k][1] == pytest.approx(eager.train_log.extra[k][1], rel=1e-4)
    # AdamW divides each gradient by its running scale: where a gradient is at noise level (the bias of the
    # attacker's conv before BatchNorm, whose true gradient is zero, a few near-zero entries elsewhere) kernel-order
    # noise becomes steps of up to lr (1e-3). Elsewhere the weights agree to 1e-4
    diffs = torch.cat([(v.float() - w.float()).abs().flatten()
                       for a, b in ((eager.model, compiled.model), (eager.attacker, compiled.attacker))
                       for v, w in zip(a.state_dict().values(), b.state_dict().values())])
    assert float(diffs.max()) < 8 * 1e-3  # 8 optimiser steps of at most lr each
    assert float((diffs > 1e-4).float().mean()) < 0.01
    assert "compile" not in to_jsonable(TrustGANConfig())
    assert stable_hash(TrustGANConfig()) == stable_hash({f: getattr(TrustGANConfig(), f) for f in
                                                        to_jsonable(TrustGANConfig())})
    assert stable_hash(TrustGANConfig(compile="default")) != stable_hash(TrustGANConfig())
