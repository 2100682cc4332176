"""The training template (methods/core/training.py, options.py, the declarations in base.py): expected
values below are worked out by hand from the inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.methods.core.base import ConfidenceMethod, Training, check_declarations
from bench.methods.core.options import Options, option
from bench.methods.core.training import (
    Loop,
    Selection,
    TrainLog,
    TrainRecipe,
    eval_mode,
    fit_loop,
    forked_rng,
    frozen,
)


def test_concat_numbers_epochs_on_and_keeps_the_last_selection():
    a = TrainLog(epoch_seconds=[1.0, 2.0], val_seconds=[0.5], losses=[3.0, 4.0], val_accuracy={2: 90.0},
                 best_epoch=2, peak_memory_mb=100.0, extra={"x": [1.0, 2.0]})
    b = TrainLog(epoch_seconds=[5.0], val_seconds=[0.25], losses=[6.0], val_accuracy={1: 95.0}, best_epoch=1,
                 peak_memory_mb=50.0, extra={"y": [7.0]})
    c = TrainLog(epoch_seconds=[8.0], losses=[9.0], best_epoch=0, device="cuda:0")  # kept the weights it began with
    out = TrainLog.concat([a, b, c])
    assert out.epoch_seconds == [1.0, 2.0, 5.0, 8.0] and out.val_seconds == [0.5, 0.25]
    assert out.losses == [3.0, 4.0, 6.0, 9.0] and out.train_seconds == 16.75
    assert out.val_accuracy == {2: 90.0, 3: 95.0}  # b's epoch 1 is epoch 3 overall
    assert out.best_epoch == 3  # b's choice (its epoch 1); c kept it (best_epoch 0)
    assert out.peak_memory_mb == 100.0 and out.device == "cuda:0"
    assert out.extra["phase"] == [1.0, 1.0, 2.0, 3.0]
    x, y = out.extra["x"], out.extra["y"]
    assert x[:2] == [1.0, 2.0] and all(math.isnan(v) for v in x[2:])
    assert y[2] == 7.0 and all(math.isnan(v) for v in y[:2] + y[3:])


class _Mixed(nn.Module):
    """train() overridden as ConfidNet's model does: its dropout stays in eval mode when the model trains."""

    def __init__(self):
        super().__init__()
        self.fc, self.drop = nn.Linear(2, 2), nn.Dropout(0.5)

    def train(self, mode: bool = True) -> "_Mixed":
        super().train(mode)
        self.drop.eval()
        return self


def test_eval_mode_restores_each_submodule_flag_also_on_error():
    m = _Mixed().train()
    m.drop.train()  # a state the override would not give back
    before = [x.training for x in m.modules()]
    assert before == [True, True, True]
    with pytest.raises(RuntimeError), eval_mode(m):
        assert not any(x.training for x in m.modules())
        raise RuntimeError("boom")
    assert [x.training for x in m.modules()] == before


def test_frozen_restores_each_parameter_flag():
    m = nn.Linear(2, 2)
    m.bias.requires_grad_(False)
    with frozen(m):
        assert not any(p.requires_grad for p in m.parameters())
    assert m.weight.requires_grad and not m.bias.requires_grad


def test_forked_rng_is_seeded_inside_and_leaves_the_caller_stream_alone():
    torch.manual_seed(5)
    expected_after = torch.rand(2)
    torch.manual_seed(1)
    expected_inside = torch.rand(3)
    torch.manual_seed(5)
    with forked_rng(torch.device("cpu"), seed=1):
        inside = torch.rand(3)
    assert torch.equal(inside, expected_inside) and torch.equal(torch.rand(2), expected_after)


def _data(n: int) -> ImageSet:
    return ImageSet(torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))


def test_fit_loop_averages_step_outputs_selects_and_restores_the_kept_weights():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.bias.fill_(0.0)
    batch_no = {"i": 0}

    def step(x, y, epoch):
        batch_no["i"] += 1
        with torch.no_grad():
            model.bias += 1.0  # each batch moves the weights: the selection must put the kept ones back
        out = {"loss": torch.tensor(float(len(x)))}  # batches of 4, 4, 2 -> mean loss (4 + 4 + 2) / 3
        if epoch == 2 and batch_no["i"] % 2 == 0:
            out["aux"] = torch.tensor(float(batch_no["i"]))  # epoch 2: batches 4 and 6 -> (4 + 6) / 2
        return out

    scores = iter([5.0, 3.0, 5.0])  # start, epoch 1, epoch 2: nothing beats the start (ties keep the earlier)
    select = Selection("score", lambda m, val, dev: next(scores), every=1, include_start=True)
    recipe = TrainRecipe(batch_size=4, epochs=2)
    log = fit_loop(model, step, _data(10), _data(3), recipe, Loop(torch.device("cpu"), seed=0), select=select,
                   after_epoch=lambda epoch: {"ten_x": 10.0 * epoch})
    assert log.losses == [pytest.approx(10 / 3)] * 2 and len(log.epoch_seconds) == 2 and len(log.val_seconds) == 2
    assert math.isnan(log.extra["aux"][0]) and log.extra["aux"][1] == 5.0
    assert log.extra["ten_x"] == [10.0, 20.0] and log.extra["score"] == [3.0, 5.0] and log.val_accuracy == {}
    assert log.best_epoch == 0 and float(model.bias.detach()) == 0.0  # the start's weights, after 6 batches moved them
    assert log.peak_memory_mb == max(log.extra[log.peak_memory_metric])


def test_fit_loop_refuses_a_step_without_a_loss():
    model = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="must return its loss"):
        fit_loop(model, lambda x, y, e: {"aux": torch.tensor(1.0)}, _data(4), _data(2), TrainRecipe(epochs=1),
                 Loop(torch.device("cpu"), seed=0, label="probe"))


def test_recipe_but_keeps_none_and_names_the_method_key():
    r = TrainRecipe(lr=0.5).but("x", lr=None, epochs=4)
    assert (r.lr, r.epochs, r.optimizer) == (0.5, 4, "adam")
    with pytest.raises(UsageError, match=r"^missingfeature.lr must be > 0, got 0$"):
        TrainRecipe().but("missingfeature", lr=0)


@dataclass(frozen=True)
class _Cfg(Options):
    section = "probe"
    rate: float = option(0.5, gt=0, le=1)
    size: int = option(0, ge=2, also=(0,))
    mode: str = option("a", one_of=("a", "b"))


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0.0}, "probe.rate must be in (0, 1], got 0.0"),
    ({"rate": float("nan")}, "probe.rate must be in (0, 1], got nan"),
    ({"size": 1}, "probe.size must be 0 or >= 2, got 1"),
    ({"mode": "c"}, "probe.mode 'c' is not one of a, b"),
])
def test_declared_ranges_are_checked_on_construction(kwargs, message):
    with pytest.raises(UsageError) as e:
        _Cfg(**kwargs)
    assert str(e.value) == message
    assert _Cfg(rate=1.0, size=0).size == 0 and _Cfg(size=2).size == 2


def test_an_undeclared_or_contradictory_trainer_is_refused_at_registration():
    class Undeclared(ConfidenceMethod):
        def _fit(self, train, val, ctx):
            pass

    class ForgotFit(ConfidenceMethod):
        training = Training.OWN

    class PosthocTrainer(ConfidenceMethod):
        training = Training.OWN
        posthoc = True

        def _fit(self, train, val, ctx):
            pass

    with pytest.raises(TypeError, match="must declare how it gets its classifier"):
        check_declarations(Undeclared, "undeclared")
    with pytest.raises(TypeError, match="does not override _fit"):
        check_declarations(ForgotFit, "forgot")
    with pytest.raises(TypeError, match="posthoc"):
        check_declarations(PosthocTrainer, "posthoc-trainer")


def test_training_layout_is_channels_last_inside_and_the_default_after():
    """CPU training of conv nets runs channels-last (faster oneDNN kernels); the weights come back in the default
    layout, so a freshly trained network and one loaded from the cache score alike."""
    from torch import nn

    from bench.methods.core.backbones import create_backbone
    from bench.methods.core.training import training_layout

    model = create_backbone("lenet", 10)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]  # conv2: 10 input channels
    x = torch.rand(4, 1, 28, 28)
    before = model.eval()(x)
    with training_layout(model, torch.device("cpu")):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
        param = conv.weight
    assert conv.weight is param and conv.weight.is_contiguous()  # same Parameter: an optimiser keeps working
    torch.testing.assert_close(model(x), before)
    mlp = create_backbone("mlp", 10)
    fc = next(mlp.parameters())
    with training_layout(mlp, torch.device("cpu")):  # nothing to convert
        assert next(mlp.parameters()) is fc and fc.is_contiguous()


def test_inference_runs_channels_last_for_bench_networks_only_and_leaves_weights_usable():
    """Gradient-free passes (predict, logits, features) of bench's own conv nets run channels-last on a CPU; the
    weights are back in the default layout after, still ordinary tensors (converted outside inference_mode, an
    attack's autograd can use them); a user's class and TorchScript are never converted (their ``view`` would fail
    on channels-last strides); SWAG's sampled weights follow its base network's layout."""
    from torch import nn

    from bench.methods.core.backbones import create_backbone
    from bench.methods.core.training import bench_built
    from bench.methods.msp import MSP
    from bench.methods.swag import SWAG

    seen = []

    class Spy(nn.Module):  # defined here, so not bench's: records the layout its convolution's weight has
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            seen.append(self.net.conv2.weight.is_contiguous())
            return self.net(x)

    m = MSP()
    m.model = create_backbone("lenet", 10)
    x = torch.rand(8, 1, 28, 28)
    conv2 = m.model.conv2
    seen_in_pass = []
    conv2.register_forward_pre_hook(lambda mod, inp: seen_in_pass.append(mod.weight.is_contiguous()))
    probs = m.predict(x).probs
    assert seen_in_pass == [False]  # channels-last inside the pass
    m.logits(x), m.features(x)  # inside an inference_mode block of their own
    assert seen_in_pass == [False] * 3
    assert all(p.is_contiguous() and not p.is_inference() for p in m.model.parameters())
    loss = m.model(x.requires_grad_()).sum()
    loss.backward()  # autograd still works on the weights and the input
    assert x.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(m.model.eval()(x.detach()).softmax(1), probs, atol=1e-6, rtol=1e-5)
    seen_in_pass.clear()
    assert m.logits(x).shape == (8, 10) and seen_in_pass == [False]

    m.model = Spy(create_backbone("lenet", 10))  # a user's class around bench's net: left as it is
    assert not bench_built(m.model)
    m.predict(x)
    assert seen == [True]
    scripted = torch.jit.script(create_backbone("lenet", 10))
    assert not bench_built(scripted)

    sw = SWAG()
    sw.model = sw.build_model()
    sw.model.thetas.normal_(0, 0.1)
    eager = sw.model.eval()(x.detach())
    with torch.no_grad():
        torch.testing.assert_close(sw.predict(x.detach()).probs.log(), eager, atol=1e-5, rtol=1e-5)
    layouts = []
    sw.model.base.conv2.register_forward_pre_hook(lambda mod, inp: layouts.append(None))
    orig = sw.model.weights

    def spy_weights(s):
        w = orig(s)
        layouts.append(w["conv2.weight"].is_contiguous())
        return w

    sw.model.weights = spy_weights
    sw.predict(x[:2].detach())
    assert False in layouts  # the sampled conv weights were handed over channels-last
    assert all(p.is_contiguous() for p in sw.model.parameters())


def test_a_configs_section_is_its_registered_name():
    from bench.methods import METHODS
    from bench.methods.core.base import ConfidenceMethod, Training, register

    for name in METHODS.names():
        cfg = METHODS.get(name).Config
        if issubclass(cfg, Options):
            assert cfg.section == name, name

    @dataclass(frozen=True)
    class Mismatch(Options):
        section = "other"

    class M(ConfidenceMethod):
        Config = Mismatch
        training = Training.SHARED_BASELINE

    with pytest.raises(TypeError, match="section = 'other'"):
        register("mismatch-probe")(M)
    assert "mismatch-probe" not in METHODS
