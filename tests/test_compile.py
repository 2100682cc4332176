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


def _scored(m, x):
    pred = m.predict(x, batch_size=128)
    feats, logits = m.features(x, batch_size=128)
    return pred, feats, logits, m.logits(x, batch_size=128)


def test_compiled_inference_matches_eager_with_one_graph_for_every_batch_size():
    """eval.compile: logits, features and the default predict through one fixed-shape graph (the last, short batch
    padded), equal to eager within floating-point noise."""
    from torch._dynamo.utils import counters

    from bench.methods import METHODS

    torch.manual_seed(0)
    m = METHODS.get("msp")()
    m.model = create_backbone("lenet5", 10)
    x = torch.rand(300, 1, 28, 28)  # batches of 128, 128, 44
    eager = _scored(m, x)
    torch._dynamo.reset()
    counters.clear()
    m.eval_compile = "reduce-overhead"  # the GPU's mode; on the CPU the same compile without graphs
    compiled = _scored(m, x)
    # two graphs, each traced once: the model's forward (predict and logits) and features + head; the 44-image
    # batch ran the 128-image graph
    assert counters["stats"]["unique_graphs"] == 2
    assert compiled[0].probs.shape == (300, 10) and compiled[1].shape[0] == 300
    assert torch.allclose(compiled[0].probs, eager[0].probs, atol=1e-5)
    assert torch.allclose(compiled[0].confidence, eager[0].confidence, atol=1e-5)
    for c, e in zip(compiled[1:], eager[1:]):
        assert torch.allclose(c, e, rtol=1e-4, atol=1e-4)
    assert m.model.training  # the model's mode is restored, as in eager inference


def test_eval_compile_is_checked_and_old_runs_read_as_eager():
    from bench.config import EvalConfig
    from bench.methods.core.training import fixed_shape
    from bench.run.result_keys import result_config

    with pytest.raises(UsageError, match="eval.compile must be one of none, default, reduce-overhead"):
        EvalConfig(compile="max")
    fn = create_backbone("lenet", 10)
    assert fixed_shape(fn, "none", 128) is fn
    old = {"eval": {"max_eval": 0, "batch_size": 2048}}  # a manifest written before eval.compile existed
    assert result_config(old)["eval"]["compile"] == "none"
    assert result_config(old) == result_config({"eval": {**old["eval"], "compile": "none"}})


def test_a_run_with_eval_compile_gives_the_eager_run_s_results(tmp_path):
    """The worker hands the run's eval.compile to every method: the shared pass of msp and energy compiled, its rows
    equal to the eager run's within floating-point noise (the checkpoint is the same, from the shared cache)."""
    import csv

    from torch._dynamo.utils import counters

    from tests._tiny import TIMED, tiny

    counters.clear()
    assert tiny(tmp_path / "eager", tmp_path / "cache", "--seeds", "0")[0] == 0  # in this process (--jobs 1)
    assert counters["stats"]["unique_graphs"] == 0
    torch._dynamo.reset()
    assert tiny(tmp_path / "compiled", tmp_path / "cache", "--seeds", "0", "--set", "eval.compile=default")[0] == 0
    assert counters["stats"]["unique_graphs"] >= 1  # the worker handed eval.compile to the methods
    manifest = (tmp_path / "compiled" / "manifest.json").read_text()
    assert '"compile": "default"' in manifest

    def values(run):
        with open(run / "results.csv") as f:
            return {(r["method"], r["eval_set"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)
                    if not any(t in r["metric"] for t in TIMED)}

    eager, compiled = values(tmp_path / "eager"), values(tmp_path / "compiled")
    assert eager.keys() == compiled.keys() and len(eager) > 20
    assert {k[0] for k in eager} == {"msp", "energy"}
    for k, v in eager.items():
        assert compiled[k] == pytest.approx(v, rel=1e-3, abs=1e-3), k
