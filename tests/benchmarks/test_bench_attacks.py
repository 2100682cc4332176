"""Adversarial eval-set generation: FGSM (white-box, per method) and a universal perturbation."""

from __future__ import annotations

import pytest
import torch

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext


def _ctx(n: int) -> EvalContext:
    return EvalContext(max_eval=n, device=torch.device("cpu"), cache_dir=None, allow_download=False)


def test_fgsm_1000(benchmark, fitted):
    method = fitted("msp")
    data = benchmark.pedantic(lambda: evalsets.build("fgsm:eps=0.1", _ctx(1000), method), rounds=3, iterations=1)
    assert data.images.shape[0] == 1000


def test_uap_one_pass_200(benchmark, fitted):
    if "uap" not in evalsets.EVAL_SETS:
        pytest.skip("no uap eval set registered")
    method = fitted("msp")  # cache_dir=None: every round computes the perturbation
    data = benchmark.pedantic(lambda: evalsets.build("uap:xi=0.2,p=inf,n=200,passes=1", _ctx(500), method),
                              rounds=2, iterations=1)
    assert data.images.shape[0] == 500
