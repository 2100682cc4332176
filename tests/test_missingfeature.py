"""Missing-feature mechanics: feature inversion, frozen conv weights, FC reset (hybrid) or not (hybrid_nr)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.methods.missingfeature import MissingFeature, MissingFeatureConfig, MissingFeatureNet


@pytest.mark.parametrize("backbone,n_conv", [("lenet", 320), ("smallconvnet", 9216)])
def test_forward_inverts_last_conv_features(backbone, n_conv):
    torch.manual_seed(0)
    net = MissingFeatureNet(create_backbone(backbone), backbone).eval()
    x = torch.rand(4, 1, 28, 28)
    b = net.backbone
    c = b.forward_conv(x)
    assert c.shape == (4, n_conv) and (c >= 0).all()  # after ReLU + max-pool
    with torch.no_grad():
        assert torch.allclose(net(x), b.fc2(F.relu(b.fc1(1 - c))), atol=1e-5)
        assert torch.allclose(b(x), b.fc2(F.relu(b.fc1(c))), atol=1e-5)  # forward_conv is the backbone's own path
        net.invert = False
        assert torch.allclose(net(x), b(x))


def test_backbone_without_conv_features_is_a_usage_error(tiny):
    with pytest.raises(UsageError, match="missingfeature needs last-conv features"):
        MissingFeature(backbone="mlp").fit(tiny[0].subset(slice(0, 8)), tiny[1].subset(slice(0, 8)))


def test_bad_config_raises_usage_error():
    with pytest.raises(UsageError, match="missingfeature.variant"):
        MissingFeatureConfig(variant="negative")
    with pytest.raises(UsageError, match="missingfeature.epochs"):
        MissingFeatureConfig(epochs=0)


@pytest.fixture(scope="module")
def phase2(tiny):
    """Baseline and phase-2 weights of tiny fits; phase 2 at a negligible learning rate shows what was reset."""
    train, val = tiny[0].subset(slice(0, 256)), tiny[1].subset(slice(0, 64))
    ctx = FitContext(recipe=TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.5, batch_size=64, epochs=1))
    base = ctx.train_baseline("lenet", 10, 0, train, val)[0].state_dict()
    fits = {}
    for variant, lr, freeze_bias in [("hybrid", 0.1, False), ("hybrid", 0.1, True), ("hybrid", 1e-12, False),
                                     ("hybrid_nr", 1e-12, False)]:
        cfg = MissingFeatureConfig(variant=variant, epochs=1, lr=lr, freeze_conv_bias=freeze_bias)
        m = MissingFeature(cfg, seed=0).fit(train, val, ctx)
        fits[(variant, lr, freeze_bias)] = {k.removeprefix("backbone."): v for k, v in m.model.state_dict().items()}
        assert m.model.invert and all(p.requires_grad for p in m.model.parameters())
    return base, fits


def test_conv_weights_frozen_and_biases_train_as_in_reference(phase2):
    base, fits = phase2
    trained = fits[("hybrid", 0.1, False)]
    for k in ("conv1.weight", "conv2.weight"):
        assert torch.equal(trained[k], base[k])
    assert not torch.equal(trained["conv2.bias"], base["conv2.bias"])  # the reference leaves conv biases trainable
    all_frozen = fits[("hybrid", 0.1, True)]
    for k in ("conv1.weight", "conv2.weight", "conv1.bias", "conv2.bias"):
        assert torch.equal(all_frozen[k], base[k])
    assert not torch.equal(trained["fc1.weight"], base["fc1.weight"])


def test_hybrid_resets_fc_and_hybrid_nr_keeps_it(phase2):
    base, fits = phase2
    reset, kept = fits[("hybrid", 1e-12, False)], fits[("hybrid_nr", 1e-12, False)]
    for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert torch.allclose(kept[k], base[k], atol=1e-6)
        assert not torch.allclose(reset[k], base[k], atol=1e-3)
    assert reset["fc1.weight"].abs().max() <= 1 / 320 ** 0.5 + 1e-6  # nn.Linear's default init bound


def test_hybrid_alt_alternates_normal_and_inverted_epochs(tiny, monkeypatch):
    seen, validated = [], []
    original = MissingFeatureNet.forward

    def spy(self, x):
        (seen if self.training else validated).append(self.invert)
        return original(self, x)

    monkeypatch.setattr(MissingFeatureNet, "forward", spy)
    train, val = tiny[0].subset(slice(0, 64)), tiny[1].subset(slice(0, 32))
    ctx = FitContext(recipe=TrainRecipe(optimizer="sgd", lr=0.1, batch_size=64, epochs=1))
    m = MissingFeature(MissingFeatureConfig(variant="hybrid_alt", epochs=3), seed=0).fit(train, val, ctx)
    assert seen == [False, True, False] and m.model.invert
    # model selection must judge every epoch as inference runs it (inverted): a normal-feature validation let
    # epoch 1 win and then failed at test time (0.01% accuracy on the 54k split)
    assert validated and all(validated)
