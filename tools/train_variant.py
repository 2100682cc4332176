"""Train a profile's baseline network with one thing changed, through bench's own training code (``new_classifier``,
``supervised_step``, ``fit_loop``, as ``FitContext.train_baseline`` does), then score MSP, energy and MaxLogit on the
full MNIST test set against Fashion-MNIST and (with ``--data-dir``) notMNIST. The change is made after the network is
built, which draws no random numbers, so initialisation, batch order and augmentation are those of the profile's
cached baseline of that seed; with no change (``--dropout`` / ``--norm`` left out) the weights are that baseline's.

- ``--dropout P``: lenet's two dropout layers at probability P (lenet's own: 0.5); docs/detectors.md.
- ``--norm MEAN,STD``: the input normalisation (lenet5's own: 0.5,0.5; OpenOOD v1's MNIST table was trained with
  0.1307,0.3081); docs/openood.md.

Saves {"model": state_dict, "log": TrainLog, "norm": [mean, std]} (a cached baseline-*.pt's layout plus the
normalisation, which is not in the state dict) for tools/feature_geometry.py.

Usage: python tools/train_variant.py OUT.pt [--profile quick|openood] [--dropout P] [--norm MEAN,STD] [--seed S]
       [--epochs N] [--data-dir DIR]
"""
import argparse
import dataclasses
import json

import torch

import bench.methods  # noqa: F401  (registers the methods and backbones)
from bench.config import load_profile, resolve
from bench.datasets import notmnist
from bench.datasets.mnist import load_embedded, to_float
from bench.datasets.splits import SplitSpec, split
from bench.methods.core.registry import METHODS
from bench.methods.core.training import Loop, fit_loop, forked_rng, new_classifier, supervised_step
from bench.metrics import ood_metrics

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", help="where to save the checkpoint")
parser.add_argument("--profile", default="quick", help="the recipe and backbone (quick: lenet; openood: lenet5)")
parser.add_argument("--dropout", type=float, default=None, help="probability of lenet's two dropout layers")
parser.add_argument("--norm", default=None, help="MEAN,STD of the input normalisation")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=0, help="instead of the profile's (0: the profile's)")
parser.add_argument("--data-dir", default=None, help="a data folder with notMNIST (scored when given)")
args = parser.parse_args()

cfg = resolve([load_profile(args.profile)], {name: METHODS.get(name).Config for name in METHODS.names()})
recipe = dataclasses.replace(cfg.train, epochs=args.epochs) if args.epochs else cfg.train
train, val = split(load_embedded("mnist", "train"), SplitSpec(cfg.split.val_fraction, cfg.split.split_seed,
                                                              max_train=cfg.split.max_train))
device = torch.device("cpu")
change = []
with forked_rng(device):
    model, stepper = new_classifier(cfg.backbone, 10, args.seed, recipe, device, len(train))
    if args.dropout is not None:
        model.conv2_drop.p = model.drop.p = args.dropout
        change.append(f"dropout {args.dropout:g}")
    if args.norm is not None:
        mean, std = (float(v) for v in args.norm.split(","))
        model.mean.fill_(mean)
        model.std.fill_(std)
        change.append(f"norm {mean:g}/{std:g}")
    label = f"{cfg.backbone} {' '.join(change) or 'as the profile'} seed {args.seed}"
    log = fit_loop(model, supervised_step(model, stepper), train, val, recipe, Loop(device, args.seed, label))
torch.save({"model": model.state_dict(), "log": dataclasses.asdict(log),
            "norm": [float(model.mean), float(model.std)]}, args.out)

sets = {"fashion": load_embedded("fashion", "test").images}
if args.data_dir:
    sets["notmnist"] = notmnist.load(args.data_dir, allow_download=False).images
test = load_embedded("mnist", "test")
model.eval()
with torch.no_grad():
    logits = {k: torch.cat([model(to_float(x)) for x in v.split(2048)]) for k, v in
              {"mnist": test.images, **sets}.items()}
scores = {"msp": lambda z: z.softmax(1).max(1).values, "energy": lambda z: z.logsumexp(1),
          "maxlogit": lambda z: z.max(1).values}
result = {"label": label, "epochs": recipe.epochs, "kept_epoch": log.best_epoch,
          "mnist_accuracy": 100 * float((logits["mnist"].argmax(1) == test.labels).float().mean())}
for name, score in scores.items():
    for s in sets:
        m = ood_metrics(score(logits["mnist"]).numpy(), score(logits[s]).numpy())
        result[f"{name} {s}"] = {"auroc": round(m["auroc"], 2), "fpr95": round(m["fpr95"], 2)}
print(json.dumps(result, indent=1))
