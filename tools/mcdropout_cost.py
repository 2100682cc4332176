"""Side by side in one process: msp vs mcdropout (T = 50) predict time per image, the batched-tail path vs T full
passes (forced by pointing mcdropout.tail_passes at full_passes). Usage: python tools/mcdropout_cost.py [backbone]"""
import statistics
import sys
import time

import torch

import bench.methods  # noqa
from bench.datasets.mnist import load_embedded
from bench.methods import mcdropout as mc
from bench.methods.core.backbones import create_backbone
from bench.methods.core.registry import METHODS

backbone = sys.argv[1] if len(sys.argv) > 1 else "lenet"
torch.manual_seed(0)
imgs = load_embedded("mnist", "test").images[:2000]
msp = METHODS.get("msp")(backbone=backbone, seed=0)
state = {"model": create_backbone(backbone).state_dict(), "extra": {}, "baseline_key": None}
msp.load_state_dict(state)
mcd = METHODS.get("mcdropout")(backbone=backbone, seed=0).load_state_dict(state)

def t(fn, reps=5):
    fn()
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    return min(xs), statistics.median(xs)

orig = mc.tail_passes
def run_full():
    mc.tail_passes = mc.full_passes
    try:
        mcd.predict(imgs, batch_size=2048)
    finally:
        mc.tail_passes = orig
res = {}
for rnd in range(2):  # interleaved rounds against load drift
    res.setdefault("msp", []).append(t(lambda: msp.predict(imgs, batch_size=2048)))
    res.setdefault("mc_tail", []).append(t(lambda: mcd.predict(imgs, batch_size=2048)))
    res.setdefault("mc_full", []).append(t(run_full, reps=2))
print("threads", torch.get_num_threads(), "backbone", backbone)
for k, v in res.items():
    print(k, "min ms/1k = %.2f" % (1000 * min(a for a, b in v) / 2))
m = min(a for a, b in res["msp"])
tail, full = min(a for a, b in res["mc_tail"]) / m, min(a for a, b in res["mc_full"]) / m
print("ratio tail/msp = %.2f, full/msp = %.2f" % (tail, full))
