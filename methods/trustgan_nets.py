"""TrustGAN's networks and losses (du Mas des Bourboux 2022; sizes and target-loss variants from the follow-up
study), written from the reference facts. The losses are documented in their section below.

The two networks are stacks of dilated residual units. Size knob ``n`` (follow-up study): channels 1 -> 2 -> 4 -> ... ->
2^(n-1), i.e. ``n - 1`` units, unit ``i`` (0-based) dilated by 2^i. One unit maps ``cin -> cout``::

    y = act( skip(x) + scale * conv3(act(conv2(x))) )      skip = 1x1 conv, conv2/conv3 = 3x3 dilated convs
                                                          with replicate padding, scale a learnable scalar = 0

* target net (``trustgan-net``): weight-normed conv2/conv3, ReLU, no batch norm; then a 1x1 conv, a global max
  over both spatial axes, FC 2^(n-1) -> ReLU -> Dropout(0.1) -> FC C. n = 7 is the original (86,046 parameters).
  Its input normalisation is TrustGAN's: per-sample min-max to [0, 1], then 2x - 1 (inside the model).
* attacker (``Attacker``): no weight norm, batch norm after the sum, LeakyReLU; then a 1x1 conv back to the
  image's channels and tanh, so samples live in the target's normalised space [-1, 1]. n = 5 is the original
  (4,931 parameters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError
from bench.methods.core.backbones import Backbone
from bench.methods.core.registry import BACKBONES


def _check_size(size: int, what: str) -> None:
    if not isinstance(size, int) or size < 2:
        raise UsageError(f"trustgan.{what} must be an integer >= 2 (7/5 = original net/attacker), got {size!r}")


class DilatedConv(nn.Module):
    """3x3 conv with dilation d and replicate padding; optionally weight-normed (w = g * v / ||v||, per output
    channel, as ``torch.nn.utils.weight_norm`` with g initialised to ||v||). Bias starts at 0."""

    def __init__(self, cin: int, cout: int, dilation: int, weight_norm: bool, kernel_size: int = 3):
        super().__init__()
        conv = nn.Conv2d(cin, cout, kernel_size)  # PyTorch's default init, then the reference's zero bias
        self.pad = dilation * (kernel_size - 1) // 2
        self.dilation = dilation
        self.weight_norm = weight_norm
        self.bias = nn.Parameter(torch.zeros(cout))
        if weight_norm:
            v = conv.weight.detach()
            self.weight_v = nn.Parameter(v.clone())
            self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clone())
        else:
            self.weight = nn.Parameter(conv.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch._weight_norm(self.weight_v, self.weight_g, 0) if self.weight_norm else self.weight
        if self.pad and w.shape[-1] == 3 and self.dilation >= max(x.shape[-2:]) - 1:
            return _saturated_conv3(x, w, self.bias)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="replicate")
        return F.conv2d(x, w, self.bias, dilation=self.dilation)


def _saturated_conv3(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The same function as a 3x3 conv with dilation d >= size - 1 on the replicate-padded input, at ~1/9 of its
    cost. With such a d every off-centre tap lands in the padding, i.e. reads the replicated first or last
    row/column, so the conv is a 1x1 conv (centre tap) plus per-column terms (top/bottom taps), per-row terms
    (left/right taps) and a per-image constant (corner taps). It matters: the last unit of the original target
    (dilation 32 on 28x28) is ~3/4 of the net's multiply-adds, and its 92x92 padded copy is the largest tensor.
    Views and stacks only (no index tensors), so nothing is copied to a GPU per call."""
    out = F.conv2d(x, w[:, :, 1:2, 1:2], bias)
    rows = torch.stack((x[:, :, 0], x[:, :, -1]), 2)  # (N, C, 2, W): first and last row
    cols = torch.stack((x[..., 0], x[..., -1]), 3)  # (N, C, H, 2)
    corners = torch.stack((rows[..., 0], rows[..., -1]), 3)  # (N, C, 2, 2)
    top_bottom = torch.einsum("ncrw,ocr->now", rows, w[:, :, ::2, 1])
    left_right = torch.einsum("nchs,ocs->noh", cols, w[:, :, 1, ::2])
    corner = torch.einsum("ncrs,ocrs->no", corners, w[:, :, ::2, ::2])
    # two full-size adds instead of three; conv2d's backward does not need its output, so adding in place is safe
    return out.add_(left_right[:, :, :, None] + (top_bottom[:, :, None, :] + corner[:, :, None, None]))


class ResUnit(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, attacker: bool):
        super().__init__()
        self.skip = nn.Conv2d(cin, cout, 1)
        nn.init.zeros_(self.skip.bias)
        self.conv2 = DilatedConv(cin, cout, dilation, weight_norm=not attacker)
        self.conv3 = DilatedConv(cout, cout, dilation, weight_norm=not attacker)
        self.scale = nn.Parameter(torch.zeros(1))
        self.norm = nn.BatchNorm2d(cout) if attacker else nn.Identity()
        self.act = nn.LeakyReLU() if attacker else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv3(self.act(self.conv2(x)))
        return self.act(self.norm(self.skip(x) + self.scale * res))


def _widths(size: int, in_chans: int) -> list[int]:
    widths = [2**i for i in range(size) if 2**i > in_chans]
    return [in_chans, *widths]


def minmax_signed(x: torch.Tensor) -> torch.Tensor:
    """TrustGAN's input normalisation: per-sample min-max to [0, 1] (a constant image maps to 0), then 2x - 1."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - lo
    span = span + (span == 0).to(span.dtype)
    return 2.0 * (x - lo) / span - 1.0


@BACKBONES.register("trustgan-net", "TrustGAN's target net: dilated residual units, size knob net_size "
                                    "(7 = original, 86,046 params)")
class TrustGANNet(Backbone):
    """TrustGAN's target classifier. ``forward_normalized`` takes inputs already in its [-1, 1] space (what the
    attacker produces), ``forward`` takes [0, 1] pixels and normalises them first."""

    stochastic_tail = True  # the only dropout is the head's: MC-dropout runs the residual units once

    def __init__(self, num_classes: int = 10, in_chans: int = 1, net_size: int = 7):
        super().__init__()
        _check_size(net_size, "net_size")
        ch = _widths(net_size, in_chans)
        self.units = nn.ModuleList(ResUnit(ch[i], ch[i + 1], 2**i, attacker=False) for i in range(len(ch) - 1))
        self.mix = nn.Conv2d(ch[-1], ch[-1], 1)
        hidden = 2 ** (net_size - 1)
        self.fc1 = nn.Linear(ch[-1], hidden)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.num_features = hidden

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return minmax_signed(x)

    def features_normalized(self, z: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            z = unit(z)
        z = self.mix(z).amax(dim=(2, 3))
        return F.relu(self.fc1(z))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_normalized(self.normalize(x))

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        return self.drop(f)

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc2(d)

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_head(h)

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.features_normalized(z))


class Attacker(nn.Module):
    """TrustGAN's confidence attacker: uniform noise shaped like the images -> images in [-1, 1] (tanh)."""

    def __init__(self, in_chans: int = 1, gan_size: int = 5):
        super().__init__()
        _check_size(gan_size, "gan_size")
        ch = _widths(gan_size, in_chans)
        self.units = nn.ModuleList(ResUnit(ch[i], ch[i + 1], 2**i, attacker=True) for i in range(len(ch) - 1))
        self.out = nn.Conv2d(ch[-1], in_chans, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            z = unit(z)
        return torch.tanh(self.out(z))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

# --- losses -------------------------------------------------------------------------------------------------
# TrustGAN's losses (du Mas des Bourboux 2022) and the target-loss variants of its follow-up study.
#
# Every target loss takes logits (N, C) and a target distribution (N, C) (one-hot for real data, uniform 1/C for
# attacker samples) and returns a per-sample mean, so their magnitudes are comparable:
#
# * ``cross-entropy``: sum_c -t_c ln p_c / ln C. Chance level on one-hot targets = 1; on the uniform target its
#   minimum is 1 (reached when p is uniform).
# * ``hinge`` / ``squared-hinge`` / ``cubed-hinge``: mean over classes of max(0, 0.5 - s_c z_c)^k with
#   s_c = +1 where t_c > 0 else -1 (the follow-up study's encoding and margin 0.5). The study summed over the whole
#   batch; we average over samples and classes. With the uniform target every s_c is +1 (as in the study).
# * ``cauchy-schwarz``: -ln(<p, t> / (|p| |t|)) / ln C; 0 when p is proportional to t. The study computed it once
#   over the flattened batch; we compute it per sample and average.
#
# The attacker loss is the mean of three terms (all as in the reference code): r0 = -ln(MCP) / ln C; r1 (decision
# diversity over pairs of the first C samples) and r2 (output diversity over pairs of the first 10 samples).

TARGET_LOSSES = ("cross-entropy", "hinge", "squared-hinge", "cubed-hinge", "cauchy-schwarz")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, 1)).sum(1).mean() / math.log(logits.shape[1])


def hinge(logits: torch.Tensor, target: torch.Tensor, power: int = 1) -> torch.Tensor:
    sign = torch.where(target > 0, 1.0, -1.0).to(logits.dtype)
    return (0.5 - sign * logits).clamp_min(0).pow(power).mean()


def cauchy_schwarz(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(1)
    cos = (p * target).sum(1) / (p.norm(dim=1) * target.norm(dim=1))
    return -cos.clamp_min(1e-12).log().mean() / math.log(logits.shape[1])


def target_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if name == "cross-entropy":
        return cross_entropy(logits, target)
    if name == "cauchy-schwarz":
        return cauchy_schwarz(logits, target)
    return hinge(logits, target, {"hinge": 1, "squared-hinge": 2, "cubed-hinge": 3}[name])


def _pair_weights(z: torch.Tensor) -> torch.Tensor:
    """(K, K) mean squared distance of the noise inputs of each pair, kept for pairs j < i (zero elsewhere)."""
    flat = z.flatten(1).float()
    d = (flat[:, None, :] - flat[None, :, :]).pow(2).mean(-1)
    return torch.tril(d, diagonal=-1)


def confidence_loss(logits: torch.Tensor) -> torch.Tensor:
    """r0: mean of -ln(MCP) / ln C (the attacker wants the target confident)."""
    logits = logits.float()
    return (logits.logsumexp(1) - logits.amax(1)).mean() / math.log(logits.shape[1])


def decision_diversity_loss(z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """r1: over pairs (i, j) of the first C samples, sum w_ij / (1 + H(p_i, p_j)) / sum w_ij / (1 + ln C), with
    w_ij the mean squared distance of their noise inputs and H(p_i, p_j) = -sum_c p_ic ln p_jc."""
    c = logits.shape[1]
    k = min(c, len(logits))
    if k < 2:  # no pair to compare (a batch of one)
        return logits.sum() * 0.0
    lg = logits[:k].float()
    cross = -(lg.softmax(1) @ F.log_softmax(lg, 1).T)  # [i, j] = H(p_i, p_j)
    w = _pair_weights(z[:k])
    return (w / (1.0 + cross)).sum() / w.sum() / (1.0 + math.log(c))


def output_diversity_loss(z: torch.Tensor, images: torch.Tensor, n: int = 10) -> torch.Tensor:
    """r2: over pairs of the first 10 samples, sum w_ij / (1 + mean squared distance of the generated images) /
    sum w_ij / (1 + 2^2)."""
    k = min(n, len(images))
    if k < 2:
        return images.sum() * 0.0
    g = images[:k].flatten(1).float()
    dist = (g[:, None, :] - g[None, :, :]).pow(2).mean(-1)
    w = _pair_weights(z[:k])
    return (w / (1.0 + dist)).sum() / w.sum() / 5.0


def attacker_loss(z: torch.Tensor, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return (confidence_loss(logits) + decision_diversity_loss(z, logits) + output_diversity_loss(z, images)) / 3.0
