"""Fit (one tiny epoch: the training step of each method, plus its own phases) and predict, per method."""

from __future__ import annotations

import pytest

from bench.methods import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_fit_one_tiny_epoch(benchmark, name, bench_data, bench_ctx, make_method):
    train, val, _ = bench_data
    method = benchmark.pedantic(lambda: make_method(name).fit(train, val, bench_ctx), rounds=2,
                                iterations=1, warmup_rounds=0)
    assert method.model is not None


@pytest.mark.parametrize("name", METHODS.names())
def test_predict_2048(benchmark, name, bench_data, fitted):
    method = fitted(name)
    x = bench_data[2].images
    pred = benchmark.pedantic(lambda: method.predict(x, batch_size=1024), rounds=3, iterations=1, warmup_rounds=1)
    assert pred.probs.shape == (len(x), 10)
