"""MC noise of the smoke mcdropout metrics: full passes vs batched tail under N inference seeds (argv[2], default
8), same checkpoint."""
import sys

import numpy as np
import torch

import bench.methods  # noqa
from bench import metrics
from bench.datasets.mnist import load_embedded
from bench.methods import mcdropout as mc
from bench.methods.core.registry import METHODS

ck = torch.load(sys.argv[1], weights_only=True)
test = load_embedded("mnist", "test")
x, y = test.images[:1000], test.labels[:1000].numpy()
orig = mc.tail_passes
for path in ("full", "tail"):
    mc.tail_passes = mc.full_passes if path == "full" else orig
    vals = {"aupr_success": [], "aurc": [], "auroc": []}
    for s in range(int(sys.argv[2]) if len(sys.argv) > 2 else 8):
        m = METHODS.get("mcdropout")(mc.MCDropoutConfig(passes=10), backbone="lenet", seed=s).load_checkpoint(ck)
        p = m.predict(x, batch_size=1000)
        r = metrics.classification_metrics(p.probs.numpy(), y, p.confidence.numpy())
        for k in vals:
            vals[k].append(r[k])
    print(path, {k: f"{np.mean(v):.2f} +- {np.std(v, ddof=1):.2f} (seed0 {v[0]:.2f}) range [{min(v):.2f},{max(v):.2f}]"
                 for k, v in vals.items()})
