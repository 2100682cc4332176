"""Train bench's lenet with its two dropout layers at probability P (default 0: no dropout) and otherwise the quick
profile's baseline recipe, split and seed handling, through bench's own training code (``new_classifier``,
``supervised_step``, ``fit_loop``), as ``FitContext.train_baseline`` does; the dropout probability is set after the
network is built, which draws no random numbers, so initialisation and batch order are those of the baseline.
With ``--dropout 0.5`` (the network's own value) it reproduces the quick profile's cached baseline of that seed.

Saves {"model": state_dict, "log": TrainLog} (the layout of a cached baseline-*.pt), for tools/feature_geometry.py
(docs/detectors.md, "Reading the leaderboard").

Usage: python tools/train_lenet_nodrop.py OUT.pt [--dropout P] [--seed S]
"""
import argparse
import dataclasses

import torch

import bench.methods  # noqa: F401  (registers the methods and backbones)
from bench.config import load_profile, resolve
from bench.datasets.mnist import load_embedded
from bench.datasets.splits import SplitSpec, split
from bench.methods.core.registry import METHODS
from bench.methods.core.training import Loop, fit_loop, forked_rng, new_classifier, supervised_step

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", help="where to save the checkpoint")
parser.add_argument("--dropout", type=float, default=0.0, help="probability of both dropout layers (lenet: 0.5)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

cfg = resolve([load_profile("quick")], {name: METHODS.get(name).Config for name in METHODS.names()})
train, val = split(load_embedded("mnist", "train"), SplitSpec(cfg.split.val_fraction, cfg.split.split_seed,
                                                              max_train=cfg.split.max_train))
device = torch.device("cpu")
with forked_rng(device):
    model, stepper = new_classifier(cfg.backbone, 10, args.seed, cfg.train, device, len(train))
    model.conv2_drop.p = model.drop.p = args.dropout
    log = fit_loop(model, supervised_step(model, stepper), train, val, cfg.train,
                   Loop(device, args.seed, f"{cfg.backbone} dropout {args.dropout:g} seed {args.seed}"))
torch.save({"model": model.state_dict(), "log": dataclasses.asdict(log)}, args.out)
print(f"{args.out}: {cfg.backbone}, dropout {args.dropout:g}, seed {args.seed}, {cfg.train.epochs} epochs; "
      f"validation accuracy by epoch {[round(a, 2) for a in log.val_accuracy.values()]}, kept epoch {log.best_epoch}")
