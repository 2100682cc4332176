"""Shared fixtures: tiny slices of the embedded MNIST, loaded once per session."""

from __future__ import annotations

import dataclasses
import signal

import pytest
import torch

from bench.cache import CheckpointCache
from bench.datasets.mnist import ImageSet, load_embedded
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainRecipe
from bench.run import executors


@pytest.fixture(scope="session")
def mnist_train() -> ImageSet:
    return load_embedded("mnist", "train")


@pytest.fixture(scope="session")
def mnist_test() -> ImageSet:
    return load_embedded("mnist", "test")


@pytest.fixture(scope="session")
def tiny(mnist_train, mnist_test):
    """(train 1024, val 256, test 256) slices: enough for a lenet to learn well above chance in 2 epochs."""
    return mnist_train.subset(slice(0, 1024)), mnist_train.subset(slice(1024, 1280)), mnist_test.subset(slice(0, 256))


@pytest.fixture(scope="session")
def tiny_ctx() -> FitContext:
    return FitContext(device=torch.device("cpu"), recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=64,
                                                                      epochs=2))


@pytest.fixture(scope="session")
def cached_tiny_ctx(tiny_ctx, tmp_path_factory) -> FitContext:
    """``tiny_ctx`` with one checkpoint cache for the whole session: fits of the ``tiny`` slices (and only those:
    the split id names them) share what they train, above all the baselines most methods read, so each baseline
    of a seed trains once per session instead of once per method and check."""
    return dataclasses.replace(tiny_ctx, split_id="tiny-1024-256",
                               cache=CheckpointCache(tmp_path_factory.mktemp("session-checkpoints")))


@pytest.fixture(autouse=True, scope="session")
def _grids_in_process():
    """In-process runs of several units stay in the test's process (``--jobs auto`` would spawn workers, which do
    not see methods a test registers); the auto rule has its own tests, and CLI subprocess tests use it as is.
    Session-scoped so that module- and session-scoped fixtures that run grids get it too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(executors, "auto_jobs", lambda n_units, device: 1)
        yield


@pytest.fixture(autouse=True)
def _sigint_as_found():
    """Every test leaves SIGINT's handler as it found it: a library that ignores SIGINT in this process would make
    the children of later tests (an ignored signal is inherited) immune to the Ctrl-C of tests/test_faults.py."""
    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not before:
        signal.signal(signal.SIGINT, before)


TIERS = ("unit", "contract", "e2e", "docs")


def pytest_collection_modifyitems(config, items):
    """Every test has one tier (README, Development): a module or test declares contract, e2e or docs
    (``pytestmark``/decorator); the rest are unit tests. ``-m "not e2e"`` is the quick subset."""
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} declares tiers {sorted(tiers)}; give it one")
        if not tiers:
            item.add_marker(pytest.mark.unit)

