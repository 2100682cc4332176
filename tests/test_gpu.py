"""The CUDA path (marked ``gpu``; skipped without CUDA): every method's smoke run, CUDA peak-memory rows, seeded
determinism, AMP off by default, and the captured (CUDA-graph) training, inference and TrustGAN steps against eager.
tools/gpu-check.sh runs these first on a lent GPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _tiny import random_images

pytestmark = [pytest.mark.gpu, pytest.mark.e2e,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMOKE = ["run", "--profile", "smoke", "--device", "cuda", "--no-progress", "--seeds", "0"]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def every_method(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpu-all")
    proc = _bench(*SMOKE, "--methods", "*", "--out", str(root / "run"), "--cache-dir", str(root / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_every_method_runs_on_cuda_without_error_rows(every_method):
    from bench.methods.core.registry import METHODS

    errors = json.loads((every_method / "errors.json").read_text()) if (every_method / "errors.json").exists() else []
    assert errors == []
    assert {r["method"] for r in _rows(every_method)} == set(METHODS.names())
    assert json.loads((every_method / "manifest.json").read_text())["device"].startswith("cuda")


def test_cuda_peak_memory_rows_for_every_method(every_method):
    from bench.methods.core.registry import METHODS

    mem = {r["method"]: float(r["value"]) for r in _rows(every_method) if r["metric"] == "peak_cuda_mem_mb"}
    assert set(mem) == set(METHODS.names())  # inference-only methods report their shared baseline's training
    assert all(v > 0 for v in mem.values())
    assert not any(r["metric"] == "peak_rss_mb" for r in _rows(every_method))


def test_seeded_runs_repeat_on_the_gpu(tmp_path):
    """Two fresh smoke runs (training included) pass the regression gate against each other, and a fitted
    stochastic method's seeded inference is bit-identical on the device."""
    runs = []
    for tag in ("a", "b"):
        out = tmp_path / tag
        proc = _bench(*SMOKE, "--methods", "msp,mcdropout", "--out", str(out), "--cache-dir", str(tmp_path / f"c{tag}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(out)
    base = tmp_path / "base.json"
    assert _bench("compare", str(runs[0]), "--baseline", str(base), "--update").returncode == 0
    proc = _bench("compare", str(runs[1]), "--baseline", str(base))
    assert proc.returncode == 0, proc.stdout[-3000:]

    import bench.methods  # noqa: F401
    from bench.datasets.mnist import load_embedded
    from bench.methods.core.registry import METHODS

    cache = tmp_path / "ca"
    ck = torch.load(next(cache.glob("mcdropout-*.pt")), weights_only=True)
    m = METHODS.get("mcdropout")(backbone="lenet", seed=0).load_checkpoint(ck, device="cuda")
    x = load_embedded("mnist", "test").images[:512]
    first, second = m.predict(x), m.predict(x)
    assert torch.equal(first.probs, second.probs) and torch.equal(first.confidence, second.confidence)


def test_amp_is_off_by_default_on_cuda(tiny):
    import bench.methods  # noqa: F401
    from bench.methods.core.base import FitContext
    from bench.methods.core.registry import METHODS
    from bench.methods.core.training import TrainRecipe
    from bench.methods.trustgan import TrustGANConfig, _Trainer

    assert TrustGANConfig().amp is False
    train, val, _ = tiny
    seen: list[bool] = []
    orig = _Trainer.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        seen.append(self.amp)

    _Trainer.__init__ = spy
    try:
        m = METHODS.get("trustgan")(seed=0).fit(train.subset(slice(0, 256)), val.subset(slice(0, 128)), FitContext(
            device=torch.device("cuda"), recipe=TrainRecipe(batch_size=64, epochs=2)))
    finally:
        _Trainer.__init__ = orig
    assert seen == [False]
    with torch.inference_mode():
        logits = m.classifier(torch.rand(4, 1, 28, 28, device="cuda"))
    assert logits.dtype == torch.float32


def test_captured_training_matches_eager_on_cuda():
    """train.compile=reduce-overhead on CUDA (torch.compile + CUDA graph trees): several steps over two batch
    shapes give the eager weights within floating-point noise, and the saved state dict is the plain model's."""
    import copy

    from bench.methods.core.backbones import create_backbone
    from bench.methods.core.training import Stepper, TrainRecipe, supervised_step

    torch.manual_seed(0)
    eager = create_backbone("lenet5", 10).cuda()  # no dropout: inductor draws its own masks (docs/performance.md)
    other = copy.deepcopy(eager)
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(n, 1, 28, 28, generator=g).cuda(), torch.randint(0, 10, (n,), generator=g).cuda())
            for n in (64, 64, 64, 17, 64, 17)]  # the epoch's last, smaller batch gets its own graph
    for model, mode in ((eager, "none"), (other, "reduce-overhead")):
        step = supervised_step(model, Stepper(model.parameters(), TrainRecipe(optimizer="sgd", lr=0.05,
                                                                              compile=mode), 6))
        model.train()
        for x, y in data:
            step(x, y, 1)
    assert list(other.state_dict()) == list(eager.state_dict())
    for k, v in eager.state_dict().items():
        assert torch.allclose(other.state_dict()[k], v, atol=1e-4), k


def test_captured_inference_matches_eager_on_cuda():
    """eval.compile=reduce-overhead on CUDA: logits, features and the default predict through one captured graph
    per function (a short last batch padded), each output a copy that survives the next replay."""
    from bench.methods import METHODS
    from bench.methods.core.backbones import create_backbone

    torch.manual_seed(0)
    m = METHODS.get("msp")()
    m.model, m.device = create_backbone("lenet5", 10).cuda(), torch.device("cuda")
    x = torch.rand(300, 1, 28, 28)
    outs = {}
    for mode in ("none", "reduce-overhead"):
        m.eval_compile = mode
        pred = m.predict(x, batch_size=128)
        outs[mode] = (pred.probs, *m.features(x, batch_size=128), m.logits(x, batch_size=128))
    for e, c in zip(outs["none"], outs["reduce-overhead"]):
        assert c.shape == e.shape and torch.allclose(c, e, rtol=1e-4, atol=1e-4)


def test_captured_trustgan_steps_match_eager_on_cuda():
    """trustgan.compile=reduce-overhead on CUDA: two epochs (the second with attacker steps and replays) give the
    eager losses within noise; the kept losses are copies (a replay overwrites a graph's outputs)."""
    from bench.datasets.mnist import load_embedded
    from bench.methods.core.base import FitContext
    from bench.methods.core.training import TrainRecipe
    from bench.methods.trustgan import TrustGAN, TrustGANConfig

    full = load_embedded("mnist", "train")
    train, val = full.subset(slice(0, 256)), full.subset(slice(256, 384))
    ctx = FitContext(device=torch.device("cuda"), recipe=TrainRecipe(batch_size=64, epochs=2))
    logs = {}
    for mode in ("none", "reduce-overhead"):
        cfg = TrustGANConfig(gan_size=2, epochs=2, batch_size=64, replay_prob=0.5, compile=mode)
        logs[mode] = TrustGAN(cfg, backbone="lenet5", seed=0).fit(train, val, ctx).train_log
    assert logs["reduce-overhead"].losses == pytest.approx(logs["none"].losses, rel=1e-3)
    for k in ("attacker_loss", "attacker_sample_loss"):
        assert logs["reduce-overhead"].extra[k][1] == pytest.approx(logs["none"].extra[k][1], rel=1e-3)


def test_a_training_resumed_on_cuda_continues_its_random_stream(tmp_path):
    """Epoch resume on CUDA (methods/core/training.py ``EpochResume``): at the first batch after the saved epoch the
    CUDA random stream (lenet's dropout) is the uninterrupted training's, bit for bit; the weights agree within
    floating-point noise (cuDNN's kernels need not be deterministic)."""
    from bench.cache import CheckpointCache
    from bench.methods.core.training import (
        EpochResume,
        Loop,
        TrainRecipe,
        fit_loop,
        forked_rng,
        new_classifier,
        supervised_step,
    )

    dev = torch.device("cuda")
    train, val = random_images(64, 1).to(dev), random_images(32, 2).to(dev)
    recipe = TrainRecipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=3)

    def run(cache, interrupt_at=0):
        seen = {}
        with forked_rng(dev):
            model, stepper = new_classifier("lenet", 10, 0, recipe, dev, len(train))
            inner, calls = supervised_step(model, stepper), [0]

            def step(x, y, epoch):
                calls[0] += 1
                if calls[0] == interrupt_at:
                    raise KeyboardInterrupt
                seen.setdefault(epoch, torch.cuda.get_rng_state(dev))
                return inner(x, y, epoch)

            resume = EpochResume(cache, "k", {"stepper": stepper}) if cache is not None else None
            fit_loop(model, step, train, val, recipe, Loop(dev, seed=0), resume=resume)
        return model, seen

    ref, ref_seen = run(None)
    cache = CheckpointCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(cache, interrupt_at=10)  # epoch 3 of 3, second batch: epochs 1-2 saved
    model, seen = run(cache)
    assert set(seen) == {3} and torch.equal(seen[3], ref_seen[3])
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
