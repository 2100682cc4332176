"""Metric computation on 10k samples (the size of a full MNIST test set), and report aggregation."""

from __future__ import annotations

import numpy as np

from bench import metrics


def _data(n: int = 10_000, c: int = 10):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs, rng.integers(0, c, n), probs.max(1)


def test_classification_metrics_10k(benchmark):
    probs, labels, conf = _data()
    out = benchmark(metrics.classification_metrics, probs, labels, conf)
    assert 0 <= out["auroc"] <= 100


def test_ood_metrics_10k_vs_10k(benchmark):
    _, _, conf = _data()
    ood = np.random.default_rng(1).uniform(size=10_000)
    out = benchmark(metrics.ood_metrics, conf, ood)
    assert 0 <= out["auroc"] <= 100


def test_report_tables(benchmark, tmp_path):
    from _runs import write_run
    from bench.report.runs import load_runs
    from bench.report.tables import build_tables

    runs = load_runs([write_run(tmp_path)])
    tables = benchmark(build_tables, runs, None, None, True)
    assert tables
