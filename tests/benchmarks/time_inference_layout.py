"""Gradient-free inference in channels-last layout on a CPU (``inference_layout``, methods/core/training.py) against
the default layout, side by side in one process (docs/performance.md). Not a pytest file: run it as

    python tests/benchmarks/time_inference_layout.py [--threads 1] [--rounds 3] [--images 10000]

For each case, ``predict`` of an untrained method (the timing does not depend on the weights) on random 28x28 images,
at the run's evaluation batch (2,048): seconds for ``--images`` images, best of ``--rounds``, and the largest
difference of the probabilities between the two layouts. The default layout is had by replacing the layout context
for the baseline pass only.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

import bench.methods.core.base as base
from bench.methods import METHODS

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--threads", type=int, default=1)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--images", type=int, default=10000)
args = p.parse_args()
torch.set_num_threads(args.threads)

CASES = [("msp", "lenet"), ("mcdropout", "lenet"), ("swag", "lenet"), ("msp", "sn-resnet"), ("msp", "duq-cnn"),
         ("msp", "lenet5")]
LAYOUT = base.inference_layout


def method(name: str, backbone: str):
    torch.manual_seed(0)
    m = METHODS.get(name)(backbone=backbone)
    m.model = m.build_model()
    if name == "swag":
        m.model.thetas.copy_(torch.nn.utils.parameters_to_vector(m.model.base.parameters()) +
                             0.01 * torch.randn_like(m.model.thetas))
    return m


def timed(m, x, channels_last: bool) -> tuple[float, torch.Tensor]:
    base.inference_layout = LAYOUT if channels_last else (lambda model, device: contextlib.nullcontext())
    best, probs = float("inf"), None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        probs = m.predict(x).probs
        best = min(best, time.perf_counter() - t0)
    base.inference_layout = LAYOUT
    return best, probs


x = torch.rand(args.images, 1, 28, 28)
print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} images, batch 2048, best of {args.rounds}")
print("| method | backbone | default s | channels-last s | speed-up | max prob. difference |")
print("|:--|:--|--:|--:|--:|--:|")
for name, backbone in CASES:
    m = method(name, backbone)
    timed(m, x[:2048], True)  # warm-up (oneDNN primitives)
    a, pa = timed(m, x, False)
    b, pb = timed(m, x, True)
    print(f"| {name} | {backbone} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {(pa - pb).abs().max():.1e} |")
