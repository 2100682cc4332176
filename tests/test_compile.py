"""train.compile: the training forward through torch.compile (CUDA graphs with "reduce-overhead" on a GPU; the GPU
figures come from tools/gpu-check.sh). On the CPU: the compiled steps give the eager steps' weights within
floating-point noise, the wrapper shares the model's parameters (the saved state dict is the plain model's), and the
default recipe keeps its cache key."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.errors import UsageError
from bench.methods.core.backbones import create_backbone
from bench.methods.core.training import Stepper, TrainRecipe, compiled_forward, supervised_step
from bench.utils import stable_hash, to_jsonable


def _train(model, recipe, x, y, steps):
    step = supervised_step(model, Stepper(model.parameters(), recipe, n_batches=steps))
    model.train()
    return [float(step(x[i], y[i], 1).detach()) for i in range(steps)]


def test_compiled_steps_match_eager_within_noise():
    from torch._dynamo.utils import counters

    mode = "reduce-overhead"  # the GPU's mode; on the CPU the same compile without graphs ("default" is its subset)
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = create_backbone("lenet5", 10)
    other = copy.deepcopy(eager)
    x, y = torch.rand(4, 32, 1, 28, 28), torch.randint(0, 10, (4, 32))
    plain = TrainRecipe(optimizer="sgd", lr=0.05, epochs=1)
    losses_eager = _train(eager, plain, x, y, 4)
    assert counters["stats"]["unique_graphs"] == 0
    losses_compiled = _train(other, TrainRecipe(optimizer="sgd", lr=0.05, epochs=1, compile=mode), x, y, 4)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward really went through torch.compile
    assert losses_compiled == pytest.approx(losses_eager, rel=1e-4, abs=1e-5)
    state_e, state_c = eager.state_dict(), other.state_dict()
    assert list(state_c) == list(state_e)  # the plain model's keys: no "_orig_mod." prefix in what is cached
    for k in state_e:
        assert torch.allclose(state_c[k], state_e[k], atol=1e-5), k
    assert not torch.equal(state_e["fc.weight"], create_backbone("lenet5", 10).state_dict()["fc.weight"])


def test_compile_none_is_the_model_itself_and_keeps_the_cache_key():
    net = create_backbone("lenet", 10)
    assert compiled_forward(net, "none") is net
    assert stable_hash(to_jsonable(TrainRecipe())) == stable_hash(to_jsonable(TrainRecipe(compile="none")))
    assert "compile" not in to_jsonable(TrainRecipe())
    assert stable_hash(to_jsonable(TrainRecipe(compile="default"))) != stable_hash(to_jsonable(TrainRecipe()))


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(UsageError, match="compile"):
        TrainRecipe().but("train", compile="max")
