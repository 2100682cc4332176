"""How much of a hendrycks run's noise-OOD numbers is the float32 tie of MSP at exactly 1.0? For each seed's msp
checkpoint (the run's checkpoints.json), recompute the logits on MNIST test and the noise sets, then score OOD
detection by the float32 max softmax (what msp reports; checked equal to the run's stored confidences) and by the
float64 max log-softmax (the same order without ties). Usage: python tools/msp_ties.py RUN_DIR [BACKBONE]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.mnist import to_float
from bench.methods.core.backbones import create_backbone
from bench.metrics import ood_metrics

run, backbone = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "hg-mlp")
ctx = EvalContext()
sets = {n: to_float(evalsets.build(n, ctx).images) for n in ("mnist", "hg:gaussian", "ood:uniform")}
for rec in json.loads((run / "checkpoints.json").read_text()).values():
    if rec["method"] != "msp":
        continue
    net = create_backbone(backbone, 10)
    net.load_state_dict(torch.load(rec["path"], map_location="cpu", weights_only=True)["state"]["model"])
    net.eval()
    with torch.no_grad():
        logits = {n: net(x).double() for n, x in sets.items()}
    p32 = {n: torch.softmax(v.float(), 1).max(1).values.numpy() for n, v in logits.items()}
    lp64 = {n: torch.log_softmax(v, 1).max(1).values.numpy() for n, v in logits.items()}
    stored = np.load(run / "predictions" / f"msp__seed{rec['seed']}__fold0__mnist.npz")["confidence"]
    assert np.abs(p32["mnist"] - stored).max() < 1e-5, "recomputed confidences differ from the run's"
    for o in ("hg:gaussian", "ood:uniform"):
        a, b = ood_metrics(p32["mnist"], p32[o]), ood_metrics(lp64["mnist"], lp64[o])
        fmt = lambda r: " / ".join(f"{r[k]:.2f}" for k in ("auroc", "aupr_in", "aupr_out"))  # noqa: E731
        print(f"seed {rec['seed']} {o}: AUROC / AUPR-In / AUPR-Out float32 MSP {fmt(a)} | float64 log-softmax "
              f"{fmt(b)} | MSP == 1.0: {int((p32['mnist'] >= 1).sum())} test digits, {int((p32[o] >= 1).sum())} noise")
