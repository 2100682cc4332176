"""Backbones: parameter counts of the reference nets, the [0, 1] input contract, features/head split, timm."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UsageError
from bench.methods.core.backbones import MNIST_MEAN, MNIST_STD, create_backbone

# Counted by hand: lenet 260 + 5,020 + 16,050 + 510; mlp 785,000 + 10,010; smallconvnet 320 + 18,496 +
# 1,179,776 + 1,290; hg-mlp 200,960 + 65,792 + 65,792 + 2,570; lenet5 456 + 2,416 + 48,120 + 10,164 + 850.
PARAMS = {"lenet": 21_840, "mlp": 795_010, "smallconvnet": 1_199_882, "hg-mlp": 335_114, "lenet5": 62_006}


@pytest.mark.parametrize("name, count", PARAMS.items())
def test_parameter_counts(name, count):
    assert sum(p.numel() for p in create_backbone(name).parameters()) == count


@pytest.mark.parametrize("name", PARAMS)
def test_features_and_head_compose_to_forward(name):
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    x = torch.rand(3, 1, 28, 28)
    f = net.forward_features(x)
    assert f.shape == (3, net.num_features)
    torch.testing.assert_close(net.forward_head(f), net(x))


def test_normalisation_is_inside_the_model():
    net = create_backbone("mlp").eval()
    x = torch.full((1, 1, 28, 28), MNIST_MEAN)
    # a constant image at the mean normalises to zeros: fc1 then sees only its bias
    torch.testing.assert_close(net.forward_features(x), torch.relu(net.fc1.bias).unsqueeze(0))
    assert net.std.item() == pytest.approx(MNIST_STD)


def test_timm_backbone_one_channel():
    net = create_backbone("timm:resnet10t").eval()
    out = net(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and net.forward_features(torch.rand(2, 1, 28, 28)).shape == (2, net.num_features)


def test_unknown_backbones():
    with pytest.raises(UsageError, match="unknown timm model"):
        create_backbone("timm:not-a-model")
    with pytest.raises(UsageError, match="did you mean lenet"):
        create_backbone("lenett")
