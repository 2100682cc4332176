"""ConfidNet: head shape, frozen classifier, TCP target, model selection by validation AUPR-Error, phase 2."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.confidnet import ConfidNetConfig, confidence_head


def test_head_is_five_dense_layers():
    head = confidence_head(1000)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1000, 400), (400, 400), (400, 400),
                                                                 (400, 400), (400, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in head) == 4 and isinstance(head[-1], nn.Linear)


def test_config_errors_name_the_key():
    with pytest.raises(UsageError, match="confidnet.head_epochs"):
        ConfidNetConfig(head_epochs=0)
    with pytest.raises(UsageError, match="confidnet.finetune_epochs"):
        ConfidNetConfig(finetune_epochs=-1)


@pytest.fixture(scope="module")
def cached_ctx(cached_tiny_ctx):
    return cached_tiny_ctx  # the session's cache: the baseline is the one the contract suite trained


def test_classifier_frozen_and_head_selected_by_val_aupr_error(tiny, cached_ctx):
    train, val, test = tiny
    msp = METHODS.get("msp")(backbone="lenet").fit(train, val, cached_ctx)
    cfg = ConfidNetConfig(head_epochs=4)
    m = METHODS.get("confidnet")(cfg, backbone="lenet").fit(train, val, cached_ctx)
    # the classifier is the cached baseline, untouched by the head's training
    for k, v in msp.classifier.state_dict().items():
        torch.testing.assert_close(m.classifier.backbone.state_dict()[k], v)
    pred = m.predict(test.images)
    torch.testing.assert_close(pred.probs, msp.predict(test.images).probs)
    assert ((pred.confidence > 0) & (pred.confidence < 1)).all()  # a sigmoid
    log = m.train_log
    phase = log.extra["phase"]  # 1 = the classifier's epochs, 2 = the head's
    n_cls = phase.count(1.0)
    assert phase == [1.0] * n_cls + [2.0] * 4 and len(log.epoch_seconds) == n_cls + 4  # costs include the classifier
    series = log.extra["val_aupr_error"][n_cls:]  # the head's epochs, each one checked
    assert len(series) == 4 and all(math.isnan(v) for v in log.extra["val_aupr_error"][:n_cls])
    best = log.best_epoch - n_cls
    assert series[best - 1] == max(series) and series.index(max(series)) == best - 1  # first best kept


def test_head_regresses_tcp(tiny, cached_ctx):
    """Trained long enough, the head's output tracks the true-class probability on the training data."""
    train, val, _ = tiny
    m = METHODS.get("confidnet")(ConfidNetConfig(head_epochs=15, head_lr=1e-3, backbone_dropout=False),
                                 backbone="lenet").fit(train, val, cached_ctx)
    net = m.classifier.eval()
    x = train.images.float() / 255
    with torch.inference_mode():
        tcp = net(x).softmax(1).gather(1, train.labels[:, None]).squeeze(1)
        conf = net.confidence(x)
    mse, var = float(((conf - tcp) ** 2).mean()), float(tcp.var())
    assert mse < 0.5 * var, (mse, var)


def test_phase_two_finetunes_a_copy_of_the_encoder(tiny, cached_ctx):
    train, val, test = tiny
    cfg = ConfidNetConfig(head_epochs=2, finetune_epochs=2, finetune_lr=1e-3)
    m = METHODS.get("confidnet")(cfg, backbone="lenet").fit(train, val, cached_ctx)
    net = m.classifier
    assert net.encoder is not None
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(net.encoder.parameters(), net.backbone.parameters()))
    changed = [k for k, v in net.encoder.state_dict().items() if not torch.equal(v, net.backbone.state_dict()[k])]
    # the copy moves iff a phase-2 epoch beat the phase-1 head on validation AUPR-Error (best epoch in phase 2)
    log = m.train_log
    assert bool(changed) == (log.extra["phase"][log.best_epoch - 1] == 3.0)
    msp = METHODS.get("msp")(backbone="lenet").fit(train, val, cached_ctx)
    torch.testing.assert_close(m.predict(test.images).probs, msp.predict(test.images).probs)
    assert log.extra["phase"].count(3.0) == 2


def test_head_reads_the_dropped_out_vector_the_last_layer_turns_into_tcp(tiny, cached_ctx):
    """As in the reference (head after the classifier's last dropout, model in train mode): during phase 1 the
    head's input is the same dropout draw from which the TCP target is computed, not the clean features."""
    train, val, _ = tiny
    calls: list[tuple[str, torch.Tensor]] = []

    def record_input(module: nn.Module, args: tuple) -> None:
        if isinstance(module, nn.Linear) and module.training:
            if module.out_features == 10:
                calls.append(("last layer", args[0].detach().clone()))
            elif (module.in_features, module.out_features) == (1000, 400):
                calls.append(("head", args[0].detach().clone()))

    def record_features(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.Linear) and module.training and (module.in_features, module.out_features) == (
                784, 1000):
            calls.append(("clean", torch.relu(out.detach()).clone()))

    METHODS.get("msp")(backbone="mlp").fit(train, val, cached_ctx)  # baseline cached before recording
    handles = [nn.modules.module.register_module_forward_pre_hook(record_input),
               nn.modules.module.register_module_forward_hook(record_features)]
    try:
        METHODS.get("confidnet")(ConfidNetConfig(head_epochs=1), backbone="mlp").fit(train, val, cached_ctx)
    finally:
        for h in handles:
            h.remove()
    steps = [calls[i - 2: i + 1] for i, c in enumerate(calls) if c[0] == "head"]
    assert len(steps) == len(train) // cached_ctx.recipe.batch_size  # one per training batch
    for (k0, clean), (k1, last), (_, head) in steps:
        assert (k0, k1) == ("clean", "last layer")
        torch.testing.assert_close(head, last)
        # MLP dropout 0.3 (inverted): each value is 0 or clean / 0.7, and some non-zero features were dropped
        kept = head != 0
        torch.testing.assert_close(head[kept], clean[kept] / 0.7)
        assert bool(((clean > 0) & ~kept).any())


def test_cache_key_changes_with_the_training_version(tiny_ctx, monkeypatch):
    """A checkpoint trained by the earlier head (clean features) is not reused."""
    m = METHODS.get("confidnet")()
    key = m.cache_key(tiny_ctx)
    monkeypatch.setattr(type(m), "training_version", 0)
    assert m.cache_key(tiny_ctx) != key
