"""``eval.max_attack``: a cap on the model-dependent (attack) sets alone, so that a full-size run keeps every other
set whole; a result key that an older run (without it) reads as 0."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from _runs import manifest, write_run
from bench.config import EvalConfig, RunConfig
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.errors import UsageError
from bench.methods import METHODS
from bench.report import runs
from bench.run.provenance import prepare_store
from bench.run.result_keys import result_config
from bench.run.store import RunStore

ATTACKS = ("fgsm:eps=0.1", "pgd:eps=0.1,steps=2", "fooling:n=40,steps=1", "uap:xi=0.2,p=inf,n=20,passes=1")


@pytest.fixture(scope="module")
def msp(tiny, tiny_ctx):
    train, val, _ = tiny
    return METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)


def _sizes(ctx: EvalContext, msp) -> dict[str, int]:
    names = ("mnist", "ood:fashion", "ood:gaussian", "occlusion:random-squares=0.3", *ATTACKS)
    return {n: len(evalsets.build(n, ctx, msp).images) for n in names}


def test_max_attack_caps_the_attack_sets_only(msp):
    whole = {"mnist": 10_000, "ood:fashion": 10_000, "ood:gaussian": 10_000, "occlusion:random-squares=0.3": 10_000}
    assert _sizes(EvalContext(max_attack=30), msp) == {**whole, **dict.fromkeys(ATTACKS, 30)}
    # with max_eval as well, the smaller cap wins (the fooling set has n=40 images of its own)
    capped = _sizes(EvalContext(max_eval=35, max_attack=30), msp)
    assert capped == {**dict.fromkeys(whole, 35), **dict.fromkeys(ATTACKS, 30)}
    assert _sizes(EvalContext(max_eval=20, max_attack=30), msp) == dict.fromkeys([*whole, *ATTACKS], 20)


def test_an_attack_set_under_max_attack_is_the_prefix_max_eval_gives(msp):
    a = evalsets.build("fgsm:eps=0.1", EvalContext(max_attack=25), msp)
    b = evalsets.build("fgsm:eps=0.1", EvalContext(max_eval=25), msp)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_max_attack_is_range_checked_and_saved_in_the_config():
    with pytest.raises(UsageError, match="eval.max_attack must be >= 0"):
        EvalConfig(max_attack=-1)
    assert EvalConfig().max_attack == 0
    assert result_config({"eval": {"max_eval": 5}})["eval"] == {"max_eval": 5, "max_attack": 0, "conformal": False,
                                                            "compile": "none"}


def test_a_run_without_the_key_reads_as_max_attack_0(tmp_path):
    old = write_run(tmp_path, "old", seeds=(0, 1))  # eval: {"max_eval": 100}, written before the key
    new = write_run(tmp_path, "new", seeds=(2,))
    m = manifest("new", ["alpha", "beta", "gamma"], (2,))
    m["config"]["eval"] = {"max_eval": 100, "max_attack": 0}
    RunStore(new).write_manifest(m)
    assert sorted(runs.load_runs([old, new]).rows["seed"].unique()) == [0, 1, 2]
    m["config"]["eval"]["max_attack"] = 50  # another cap is another result
    RunStore(new).write_manifest(m)
    with pytest.raises(UsageError, match="eval differs"):
        runs.load_runs([old, new])


def test_resume_refuses_another_attack_cap(tmp_path):
    cfg = RunConfig(profile="smoke", eval=EvalConfig(max_eval=100, max_attack=50))
    store = prepare_store(cfg, tmp_path / "run", False, ["bench"], torch.device("cpu"))
    store.write_cell("x", [])
    assert store.read_manifest()["config"]["eval"]["max_attack"] == 50
    prepare_store(cfg, store.dir, True, ["bench"], torch.device("cpu"))
    with pytest.raises(UsageError, match="eval.max_attack: 50 in the run, 0 now"):
        prepare_store(dataclasses.replace(cfg, eval=EvalConfig(max_eval=100)), store.dir, True, ["bench"],
                      torch.device("cpu"))
