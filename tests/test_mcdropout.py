"""MC-dropout's cost floor: the deterministic prefix once, the stochastic tail T times (batched), same model.

Exactness is checked with dropouts replaced by fixed masks (the same mask table read by both paths); the sampling
itself is checked by comparing both paths' statistics over many passes, with a control showing the comparison
catches a tail that skips a dropout.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.methods import mcdropout as mc
from bench.methods.core.backbones import create_backbone
from bench.methods.core.registry import METHODS


class FixedMask(nn.Module):
    """A dropout whose keep/drop decisions come from a fixed table, read row by row across calls (a cursor), so T
    calls on N images and one call on T*N images see the same masks. ``channelwise`` as Dropout2d (one decision per
    image and channel), else one per value, as Dropout."""

    def __init__(self, p: float, channelwise: bool, rows: int, width: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = (torch.rand(rows, width, generator=g) >= p).float() / (1 - p)
        self.channelwise, self.cursor = channelwise, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.table[self.cursor : self.cursor + len(x)]
        self.cursor += len(x)
        shape = (*x.shape[:2], *([1] * (x.dim() - 2))) if self.channelwise else x.shape
        return x * m[:, : shape[1] if self.channelwise else x[0].numel()].reshape(shape)


def _fix_masks(net: nn.Module, rows: int) -> list[FixedMask]:
    fixed = []
    for name, mod in list(net.named_modules()):
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            fm = FixedMask(mod.p, isinstance(mod, nn.Dropout2d), rows, 10_000, seed=len(fixed))
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], fm)
            fixed.append(fm)
    assert fixed, "the backbone has no dropout to fix"
    return fixed


def _rewind(fixed: list[FixedMask]) -> None:
    for fm in fixed:
        fm.cursor = 0


def _net(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "trustgan-net":  # a smaller size of the same class, for speed
        from bench.methods.trustgan_nets import TrustGANNet

        return TrustGANNet(10, net_size=4).eval()
    return create_backbone(name).eval()


BACKBONES = ["lenet", "mlp", "smallconvnet", "trustgan-net", "timm:test_byobnet"]


@pytest.mark.parametrize("name", BACKBONES)
def test_prefix_then_tail_is_forward_exactly_for_a_fixed_mask(name, mnist_test):
    net = _net(name)
    assert net.stochastic_tail
    x = mnist_test.images[:12].float() / 255
    fixed = _fix_masks(net, rows=len(x))
    with torch.inference_mode():
        whole = net(x)
        _rewind(fixed)
        split = net.forward_tail(net.forward_prefix(x))
        _rewind(fixed)
        no_dropout_in_prefix = net.forward_prefix(x)
    assert torch.equal(whole, split)
    assert all(fm.cursor == 0 for fm in fixed)  # the prefix read no mask: it holds no dropout
    assert no_dropout_in_prefix.shape[0] == len(x)


@pytest.mark.parametrize("name", ["lenet", "smallconvnet"])
def test_batched_tail_passes_equal_full_passes_for_fixed_masks(name, mnist_test, monkeypatch):
    """Pass t of image i is row t * N + i of the stacked tail, also across chunks (forced small here)."""
    net = _net(name)
    x, passes = mnist_test.images[:4].float() / 255, 5
    fixed = _fix_masks(net, rows=len(x) * passes)
    with torch.inference_mode():
        full = mc.full_passes(net, x, passes)
        _rewind(fixed)
        h_numel = net.forward_prefix(x).numel()
        monkeypatch.setattr(mc, "TAIL_CHUNK_ELEMENTS", 2 * h_numel)  # chunks of 2, 2 and 1 passes
        tail = mc.tail_passes(net, x, passes)
    assert tail.shape == full.shape == (passes, len(x), 10)
    assert all(fm.cursor == len(x) * passes for fm in fixed)
    # batch sizes differ (N vs 2N per call), so the matmuls may round differently: float32 tolerance
    torch.testing.assert_close(tail, full)


def _moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return samples.mean(0), samples.std(0)


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_both_paths_sample_the_same_predictive_distribution(name, mnist_test):
    net = _net(name)
    with torch.no_grad():  # sharper logits than at init, so the dropout spread is visible in the probabilities
        for mod in (net.fc2,):
            mod.weight.mul_(8)
    x, passes = mnist_test.images[:8].float() / 255, 300
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    with torch.inference_mode():
        torch.manual_seed(1)
        mean_f, std_f = _moments(mc.full_passes(net, x, passes))
        torch.manual_seed(2)
        mean_t, std_t = _moments(mc.tail_passes(net, x, passes))
        # control: a tail that skipped lenet's first dropout (or the mlp's only one) is told apart by the same check
        torch.manual_seed(3)
        first = net.conv2_drop if name == "lenet" else net.drop
        first.eval()
        mean_c, std_c = _moments(mc.tail_passes(net, x, passes))
    se = ((std_f**2 + std_t**2) / passes).sqrt()
    assert ((mean_f - mean_t).abs() <= 5 * se + 1e-6).all()
    assert (std_f > 0.02).any()  # the check below is not comparing zeros
    assert (std_t.sum() / std_f.sum() - 1).abs() < 0.05  # the spread over passes agrees
    assert (std_c.sum() / std_f.sum() - 1).abs() > 0.2  # the control fails the check


def _counting(net: nn.Module) -> dict[str, int]:
    calls = {"forward": 0, "prefix": 0, "tail": 0}
    for what, attr in (("forward", "forward"), ("prefix", "forward_prefix"), ("tail", "forward_tail")):
        fn = getattr(net, attr)

        def wrapped(*a, _fn=fn, _what=what, **k):
            calls[_what] += 1
            return _fn(*a, **k)

        setattr(net, attr, wrapped)
    return calls


def test_mcdropout_runs_the_prefix_once_per_batch_and_is_seeded(mnist_test):
    method = METHODS.get("mcdropout")(mc.MCDropoutConfig(passes=50), backbone="lenet", seed=0)
    method.load_state_dict({"model": _net("lenet").state_dict()})
    calls = _counting(method.model)
    x = mnist_test.images[:30]
    first = method.predict(x, batch_size=20)  # two batches
    assert calls == {"forward": 0, "prefix": 2, "tail": 2}  # 50 passes of 20 + 10 images fit one chunk each
    second = method.predict(x, batch_size=20)
    assert torch.equal(first.probs, second.probs) and torch.equal(first.confidence, second.confidence)
    # dropout is really on: the mean of 50 samples is not the deterministic eval-mode softmax
    with torch.inference_mode():
        plain = method.model.eval()(x.float() / 255).softmax(1)
    assert not torch.allclose(first.probs, plain, atol=1e-4)


def test_models_without_a_declared_tail_keep_full_passes(mnist_test):
    method = METHODS.get("mcdropout")(mc.MCDropoutConfig(passes=7), backbone="lenet", seed=0)
    method.load_state_dict({"model": _net("lenet").state_dict()})
    method.model.stochastic_tail = False
    calls = _counting(method.model)
    method.predict(mnist_test.images[:5])
    assert calls == {"forward": 7, "prefix": 0, "tail": 0}


def test_timm_tail_only_when_the_body_has_no_dropout():
    net = create_backbone("timm:test_byobnet")
    assert net.stochastic_tail  # drop_rate 0.2 lives in the head alone
    net.model.stem = nn.Sequential(net.model.stem, nn.Dropout(0.1))
    assert not net.stochastic_tail
