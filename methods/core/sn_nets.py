"""A small spectral-normalised residual network (``sn-resnet``), the feature extractor DDU (and SNGP) assume.

DDU (Mukhoti et al. CVPR 2023) needs features that are *sensitive* (residual connections: distinct inputs keep
distinct features) and *smooth* (a bounded Lipschitz constant: spectral normalisation), so that a density on them
says how far an input is from the training data. Shaped after DDU's ResNet (omegafragger/DDU, net/resnet.py, its
``mod`` variant): 3x3 convolutions without bias, each spectral-normalised to a Lipschitz bound of ``coeff`` = 3
with one power iteration per training step; batch norm; leaky ReLU; shortcuts that average-pool and zero-pad
channels instead of a 1x1 convolution. Sized for a CPU: a stem of 8 channels at full resolution, then three basic
blocks of 16, 32, 64 channels at stride 2, global average pooling -> 64 features -> linear classifier (not
normalised, as DDU's). About 100k parameters, ~4.6x lenet's multiply-adds.

Difference from DDU's code: the norm bounded is that of the weight reshaped to (out, in * k * k), as SNGP's and
Miyato's spectral norm (DDU bounds the convolution operator itself for 3x3 kernels, with the input size): same
idea, a looser bound, no input size to know. Any image shape (C x H x W) works: the pooling is adaptive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from bench.methods.core.backbones import MNIST_MEAN, MNIST_SHAPE, MNIST_STD, Backbone
from bench.methods.core.registry import BACKBONES


class SoftSpectralNorm(nn.Module):
    """Parametrization W -> W / max(1, sigma(W) / coeff), sigma by power iteration on W reshaped to (out, -1).
    In training mode each call runs ``iterations`` steps and keeps u, v (buffers, so checkpoints restore them);
    in eval mode the stored vectors are used, so inference is deterministic."""

    def __init__(self, weight: torch.Tensor, coeff: float, iterations: int = 1):
        super().__init__()
        rows, cols = weight.shape[0], weight[0].numel()
        self.coeff, self.iterations = coeff, iterations
        self.register_buffer("u", F.normalize(torch.randn(rows), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(cols), dim=0))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.reshape(weight.shape[0], -1)
        if self.training:
            with torch.no_grad():
                u, v = self.u, self.v
                for _ in range(self.iterations):
                    v = F.normalize(w.t() @ u, dim=0)
                    u = F.normalize(w @ v, dim=0)
                self.u.copy_(u)
                self.v.copy_(v)
        sigma = self.u.clone() @ w @ self.v.clone()  # clones: the in-place update must not touch autograd's copy
        return weight / torch.clamp(sigma / self.coeff, min=1.0)


def sn(module: nn.Module, coeff: float) -> nn.Module:
    parametrize.register_parametrization(module, "weight", SoftSpectralNorm(module.weight, coeff))
    return module


class PoolPadShortcut(nn.Module):
    """Average-pool by the stride and zero-pad the new channels (DDU's shortcut): 1-Lipschitz, no weights."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class SNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, coeff: float):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), coeff)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), coeff)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = PoolPadShortcut(stride, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)))
        return F.leaky_relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@BACKBONES.register("sn-resnet", "spectral-normalised residual net (DDU's design, coeff 3): stem 8, blocks 16-32-64 "
                                 "stride 2, leaky ReLU, BN, avg-pool shortcuts; 64 features; any image shape")
class SNResNet(Backbone):
    num_features = 64
    any_shape = True
    coeff = 3.0  # DDU's default Lipschitz bound per layer

    def __init__(self, num_classes: int = 10, shape: tuple[int, int, int] = MNIST_SHAPE):
        mnist = tuple(shape) == MNIST_SHAPE
        super().__init__(*((MNIST_MEAN, MNIST_STD) if mnist else (0.5, 0.5)))  # other data: [0, 1] -> [-1, 1]
        widths = (8, 16, 32, self.num_features)
        self.stem = sn(nn.Conv2d(shape[0], widths[0], 3, 1, 1, bias=False), self.coeff)
        self.bn = nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(*(SNBlock(a, b, 2, self.coeff) for a, b in zip(widths[:-1], widths[1:])))
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn(self.stem(self.normalize(x))))
        return F.adaptive_avg_pool2d(self.blocks(h), 1).flatten(1)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc(d)
