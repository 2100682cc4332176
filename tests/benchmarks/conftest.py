"""Micro-benchmarks (pytest-benchmark): not part of the default test run; run them with ``tox -e bench`` or
``pytest tests/benchmarks --benchmark-autosave`` and compare runs with ``--benchmark-compare``. They time the hot
paths (fit, predict, attacks, metrics) on tiny CPU data; timings are noisy on shared machines, which is why the CI
gate judges metrics, not these."""

from __future__ import annotations

import pytest
import torch

from bench.methods import METHODS
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe

BENCH_RECIPE = TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64, epochs=1)
# Training-budget options cut to one epoch / few members so that a fit is one small epoch of each method's own
# training step (TrustGAN: no target-alone warm-up epoch, so its attacker steps are timed). Applied where the
# method's Config has the field; inference options keep their defaults (predict is timed as users run it).
BENCH_OPTIONS = {"head_epochs": 1, "members": 2, "epochs": 1, "nb_step_net_alone": 0, "finetune_epochs": 0}


def bench_config(cls):
    import dataclasses

    cfg = cls.Config
    fields = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    return cfg(**{k: v for k, v in BENCH_OPTIONS.items() if k in fields})


@pytest.fixture(scope="session")
def bench_data(mnist_train, mnist_test):
    """(train 512, val 128, test 2048): small enough for every method to fit in seconds on a CPU."""
    return mnist_train.subset(slice(0, 512)), mnist_train.subset(slice(512, 640)), mnist_test.subset(slice(0, 2048))


@pytest.fixture(scope="session")
def bench_ctx() -> FitContext:
    return FitContext(device=torch.device("cpu"), recipe=BENCH_RECIPE)


@pytest.fixture(scope="session")
def make_method():
    """An unfitted method by name, with the benchmark's training budget."""

    def make(name: str):
        cls = METHODS.get(name)
        return cls(bench_config(cls), seed=0)

    return make


@pytest.fixture(scope="session")
def fitted(bench_data, bench_ctx):
    """Fitted methods by name, fitted once per session."""
    train, val, _ = bench_data
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cls = METHODS.get(name)
            cache[name] = cls(bench_config(cls), seed=0).fit(train, val, bench_ctx)
        return cache[name]

    return get
