"""Backbones: image classifiers taking [0, 1] pixels, normalising inside, exposing penultimate features.

Every backbone implements ``forward_features(x) -> (N, F)`` (penultimate features, what ConfidNet and TrustScore
read), ``head_dropout(f)`` (the dropout before the last layer, identity if none) and ``forward_classifier(d)`` (the
last layer alone), and sets ``num_features``. ``forward_head = forward_classifier o head_dropout`` and ``forward``
is the whole composition. The split lets ConfidNet feed its head the very dropped-out vector the last layer sees.

MC-dropout's cost floor: a backbone whose layers before its first dropout are deterministic sets
``stochastic_tail = True`` and implements ``forward_prefix(x) -> h`` (those layers, no dropout in them) and
``forward_tail(h) -> logits`` (the rest, from the first dropout on), with ``forward == forward_tail o forward_prefix``
for any dropout mask. MC-dropout then runs the prefix once and only the tail T times, batched; a model without the
declaration keeps T full passes.

Shape: bench's registered backbones are built for MNIST (1 x 28 x 28). ``create_backbone(..., shape=(C, H, W))``
builds for a user's dataset (``--data``; a method passes its own ``shape``, the data's): ``timm:<model>`` then takes
C input channels, a backbone marked ``any_shape`` (``tinycnn``) takes the whole shape, and the MNIST backbones refuse
with one line. Every built network records the shape it was built for as ``input_shape``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.methods.core.registry import BACKBONES

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_SHAPE = (1, 28, 28)


class Backbone(nn.Module):
    """Base: subclasses set ``num_features`` and implement ``forward_features`` and ``forward_classifier``, and
    ``head_dropout`` where they have a dropout before the last layer."""

    num_features: int
    #: True where ``forward_prefix`` / ``forward_tail`` are implemented (see the module docstring)
    stochastic_tail: bool = False
    #: (C, H, W) of the images it was built for (``create_backbone`` sets it); no annotation, which TorchScript
    #: would try to compile
    input_shape = MNIST_SHAPE

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD):
        super().__init__()
        # Buffers, not Python floats, so the normalisation travels with .to(device) and with the state dict.
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.forward_classifier(self.head_dropout(f))

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        return f

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward_classifier (its last layer) and, "
                                  "if it has a dropout before that layer, head_dropout; see methods/core/backbones.py")

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not declare a stochastic tail")

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not declare a stochastic tail")


@BACKBONES.register("lenet", "PyTorch MNIST example net (conv10-conv20+dropout2d-fc50-dropout-fc), 21,840 params")
class LeNet(Backbone):
    num_features = 50
    stochastic_tail = True

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(50, num_classes)

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Last conv features after ReLU + max-pool, flattened (N, 320): what the missing-feature method inverts."""
        x = F.relu(F.max_pool2d(self.conv1(self.normalize(x)), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        return x.flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(self.forward_conv(x)))

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Both convs with their pools and ReLUs, (N, 20, 4, 4): ~96% of the multiply-adds. The first dropout
        (Dropout2d after conv2) multiplies each whole channel by 0 or 1/(1-p) >= 0; max-pool and ReLU commute exactly
        with that (a monotone rounding commutes with max), so the tail applies it after them, on 4x fewer values,
        with the same mask shape (N, 20, 1, 1) and the same result."""
        x = F.relu(F.max_pool2d(self.conv1(self.normalize(x)), 2))
        return F.relu(F.max_pool2d(self.conv2(x), 2))

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_head(F.relu(self.fc1(self.conv2_drop(h).flatten(1))))

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        return self.drop(f)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc2(d)


class _DropoutFc2Head(Backbone):
    """A backbone whose only dropout is ``self.drop`` before its last layer ``self.fc2``: MC-dropout's stochastic
    tail is that head alone."""

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)  # the only dropout is the head's

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_head(h)

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        return self.drop(f)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc2(d)


@BACKBONES.register("mlp", "ConfidNet's MNIST MLP 784-1000-10 with dropout 0.3")
class MLP(_DropoutFc2Head):
    num_features = 1000
    stochastic_tail = True

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 28):
        super().__init__()
        self.fc1 = nn.Linear(in_chans * image_size * image_size, 1000)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(1000, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(self.normalize(x).flatten(1)))


@BACKBONES.register("smallconvnet", "ConfidNet's SmallConvNet conv32-conv64-pool-drop0.25-fc128-drop0.5-fc10")
class SmallConvNet(Backbone):
    num_features = 128
    stochastic_tail = True

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Last conv features after ReLU + max-pool, flattened (N, 9216): what the missing-feature method inverts."""
        x = F.relu(self.conv2(F.relu(self.conv1(self.normalize(x)))))
        return F.max_pool2d(x, 2).flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(self.drop1(self.forward_conv(x))))

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_conv(x)  # the first dropout (drop1) comes right after the pool

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_head(F.relu(self.fc1(self.drop1(h))))

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        return self.drop2(f)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc2(d)


@BACKBONES.register("hg-mlp", "Hendrycks & Gimpel's MNIST MLP (ICLR 2017): 784-256-256-256-10, GELU, raw [0, 1] "
                               "pixels, their initialisation; 335,114 params")
class HGMLP(Backbone):
    """The MNIST network of Hendrycks & Gimpel's baseline (code: hendrycks/error-detection, MNIST notebook): three
    hidden layers of 256 with the tanh-approximated GELU, no dropout, no input normalisation (the TensorFlow MNIST
    reader's [0, 1] pixels). Initialisation as theirs: each unit's incoming weight vector is a Gaussian draw rescaled
    to unit L2 norm, then divided by sqrt(1 + 0.425) (first layer), sqrt(0.425 + 0.425) (hidden) and
    sqrt(0.425 + 1) (logits); biases 0."""

    num_features = 256

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 28):
        super().__init__(mean=0.0, std=1.0)
        self.fc1 = nn.Linear(in_chans * image_size * image_size, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 256)
        self.fc4 = nn.Linear(256, num_classes)
        for layer, scale in ((self.fc1, 1 + 0.425), (self.fc2, 0.85), (self.fc3, 0.85), (self.fc4, 0.425 + 1)):
            with torch.no_grad():
                w = torch.randn_like(layer.weight)  # (out, in): a row is one unit's incoming weights
                layer.weight.copy_(w / w.norm(dim=1, keepdim=True) / scale ** 0.5)
                layer.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x).flatten(1)
        for fc in (self.fc1, self.fc2, self.fc3):
            h = F.gelu(fc(h), approximate="tanh")
        return h

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc4(d)


@BACKBONES.register("lenet5", "OpenOOD's LeNet-5 (MNIST benchmark): conv6(pad 2)-conv16-conv120-fc84-fc, ReLU, "
                               "max-pools, no dropout; grey replicated to 3 channels, (x - 0.5) / 0.5; 62,006 params")
class LeNet5(Backbone):
    """The LeNet of OpenOOD's MNIST benchmark (openood/networks/lenet.py): it was trained on grey digits converted to
    RGB and normalised with mean = std = 0.5 per channel, so the first convolution takes 3 channels. Here a grey
    image is replicated to 3 channels inside, after the same normalisation, so bench's (N, 1, 28, 28) [0, 1] images
    give exactly what OpenOOD's network saw. ``feature_list`` returns the four maps OpenOOD's multi-layer
    Mahalanobis reads (after each block, then the 84-d features)."""

    num_features = 84

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__(mean=0.5, std=0.5)
        if in_chans not in (1, 3):
            raise UsageError(f"lenet5 takes grey (1) or RGB (3) images, not {in_chans} channels")
        self.block1 = nn.Sequential(nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(16, 120, 5), nn.ReLU())
        self.classifier1 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)

    def feature_list(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[block1 (N, 6, 14, 14), block2 (N, 16, 5, 5), block3 flattened (N, 120), features (N, 84)]."""
        x = self.normalize(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as OpenOOD's Convert('RGB') did before normalising
        f1 = self.block1(x)
        f2 = self.block2(f1)
        f3 = self.block3(f2).flatten(1)
        return [f1, f2, f3, F.relu(self.classifier1(f3))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_list(x)[-1]

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc(d)


FASHION_MEAN, FASHION_STD = 0.2861, 0.3530  # the DUQ reference's Fashion-MNIST normalisation (utils/datasets.py)


@BACKBONES.register("duq-cnn", "DUQ's Fashion-MNIST CNN (its cnn_duq.py): conv64-bn-conv128-bn-conv128-bn, 3x3, "
                               "ReLU, max-pools, fc256, no dropout; (x - 0.2861) / 0.3530; 356,618 params")
class DUQCNN(Backbone):
    """The network of DUQ's Fashion-MNIST experiment (van Amersfoort et al. 2020; y0ast/deterministic-uncertainty-
    quantification, utils/cnn_duq.py ``Model``): three 3x3 convolutions with batch norm (padded, padded, unpadded),
    each followed by ReLU and a 2x2 max-pool (28 -> 14 -> 7 -> 5 -> 2), then fc 512 -> 256 + ReLU: the 256-d features.
    Its softmax twin (``SoftmaxModel``) puts one linear layer on them, as ``forward_classifier`` here. Inputs are
    normalised with the Fashion-MNIST statistics the reference uses for every set it feeds this net (its OOD sets
    take the in-distribution transform)."""

    num_features = 256

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__(mean=FASHION_MEAN, std=FASHION_STD)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(128)
        self.conv3 = nn.Conv2d(128, 128, 3)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc1 = nn.Linear(2 * 2 * 128, 256)
        self.fc = nn.Linear(256, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.max_pool2d(F.relu(bn(conv(x))), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc(d)


@BACKBONES.register("tinycnn", "small CNN for any image shape (--data): conv32-conv64-maxpool-avgpool 4x4-fc128-"
                               "drop0.5-fc; inputs (x - 0.5) / 0.5")
class TinyCNN(_DropoutFc2Head):
    """A small generic CNN for a user's data of any C x H x W (H, W >= 2), e.g. 8x8 digits or 32x32 colour images:
    two 3x3 convolutions (padded, so no size is too small), a 2x2 max-pool, an adaptive average pool to at most 4x4,
    then fc 128 -> dropout 0.5 -> fc K. The data's mean is unknown when it is built, so inputs are mapped from
    [0, 1] to [-1, 1]. Its only dropout is the head's, so MC-dropout runs the body once."""

    num_features = 128
    stochastic_tail = True
    any_shape = True

    def __init__(self, num_classes: int = 10, shape: tuple[int, int, int] = MNIST_SHAPE):
        super().__init__(mean=0.5, std=0.5)
        c, h, w = shape
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((min(4, h // 2), min(4, w // 2)))
        self.fc1 = nn.Linear(64 * min(4, h // 2) * min(4, w // 2), 128)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(self.normalize(x)))))
        return F.relu(self.fc1(self.pool(F.max_pool2d(x, 2)).flatten(1)))


class TimmBackbone(Backbone):
    """Any timm model built with one input channel; features are timm's pre-logits."""

    def __init__(self, model_name: str, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0):
        super().__init__()
        import timm

        if model_name not in timm.list_models():
            raise UsageError(f"unknown timm model {model_name!r}; see timm.list_models('*pattern*')")
        self.model = timm.create_model(
            model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
        )
        self.num_features = self.model.num_features

    @property
    def stochastic_tail(self) -> bool:  # type: ignore[override]
        """timm puts its head dropout (drop_rate) right before the classifier. When every active dropout module sits
        in the head (no drop rates in the body), the body is deterministic and the head is the stochastic tail.
        Checked on every call, so a dropout added to the body later turns it off. (A functional head dropout, e.g.
        ResNet's F.dropout, is no module: MC-dropout refuses such a model either way.)"""
        return all("head" in n for n, m in self.model.named_modules()
                   if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(self.normalize(x))

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(h)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # timm applies its head dropout inside pre_logits, so head_dropout stays the identity here
        return self.model.forward_head(self.model.forward_features(self.normalize(x)), pre_logits=True)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.model.get_classifier()(d)


def create_backbone(name: str, num_classes: int = 10, in_chans: int | None = None,
                    shape: tuple[int, int, int] = MNIST_SHAPE) -> Backbone:
    """Build a registered backbone, or ``timm:<model>`` for any timm model (dropout 0.2 before its classifier), for
    images of ``shape`` (C, H, W); ``in_chans`` overrides its channels."""
    shape = tuple(int(d) for d in shape)  # type: ignore[assignment]
    if name.startswith("timm:"):
        model: Backbone = TimmBackbone(name[len("timm:"):], num_classes=num_classes, in_chans=in_chans or shape[0],
                                       drop_rate=0.2)
    else:
        cls = BACKBONES.get(name)
        if getattr(cls, "any_shape", False):
            model = cls(num_classes=num_classes, shape=(in_chans or shape[0], *shape[1:]))
        elif shape != MNIST_SHAPE:
            raise UsageError(f"backbone {name} is built for 28x28 grey images (MNIST), not "
                             f"{'x'.join(map(str, shape))} (C x H x W); use --backbone tinycnn or timm:<model>")
        else:
            model = cls(num_classes=num_classes, in_chans=in_chans or 1)
    model.input_shape = (in_chans or shape[0], *shape[1:])  # what feature probes feed it (methods/core/features.py)
    return model
