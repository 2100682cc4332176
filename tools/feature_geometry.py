"""Why Mahalanobis and ViM fail (or not) on an MNIST backbone: an independent float64 numpy computation of their
scores and ingredients on one trained checkpoint (docs/detectors.md, "Reading the leaderboard").

Training statistics come from the penultimate features of the training split every bench profile uses (54,000 of
the 60,000 images: validation fraction 0.1, split seed 0): class means and tied covariance (Mahalanobis); origin
u = -W^+ b, principal directions of the covariance about u, and alpha = mean max-logit / mean residual (ViM). For
each full evaluation set (MNIST test, Fashion-MNIST test, notMNIST's 10,000 glyphs when --data-dir holds them,
bench's ood:uniform noise) it prints the median L2 norm of the features and the OOD AUROC against MNIST test
(in-distribution positive) of: the Mahalanobis score; ViM's residual alone (minus the residual, so that a smaller
residual reads as in-distribution, ViM's premise); the feature norm alone; ViM (energy - alpha * residual); energy.

Usage: python tools/feature_geometry.py CHECKPOINT [--backbone lenet|lenet5] [--dim D] [--data-dir DIR]
CHECKPOINT is a cached baseline-*.pt ({"model": ...}) or a method's *.pt ({"state": {"model": ...}}); D defaults
to bench's rule F // 2 (lenet 25, lenet5 42). Example:
    python tools/feature_geometry.py results/cache/baseline-<key>.pt --backbone lenet --data-dir ../shared/data
"""
import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import bench.methods  # noqa: F401  (registers the backbones)
from bench.datasets import notmnist
from bench.datasets.evalsets import NOISE_SEED
from bench.datasets.mnist import load_embedded, to_float
from bench.datasets.splits import SplitSpec, split
from bench.methods.core.backbones import create_backbone

LAST_LAYER = {"lenet": "fc2", "lenet5": "fc"}
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--backbone", choices=sorted(LAST_LAYER), default="lenet")
parser.add_argument("--dim", type=int, default=0, help="ViM's principal dimension (0: F // 2)")
parser.add_argument("--data-dir", help="folder holding notMNIST (bench.datasets.notmnist); without it, no notMNIST")
args = parser.parse_args()

ckpt = torch.load(args.checkpoint, weights_only=True)
net = create_backbone(args.backbone, 10).eval()
net.load_state_dict(ckpt["state"]["model"] if "state" in ckpt else ckpt["model"])
if "norm" in ckpt:  # tools/train_variant.py --norm: the normalisation is a non-persistent buffer
    net.mean.fill_(ckpt["norm"][0])
    net.std.fill_(ckpt["norm"][1])


def features(images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([net.forward_features(to_float(images[i:i + 2000])).double().numpy()
                               for i in range(0, len(images), 2000)])


train, _ = split(load_embedded("mnist", "train"), SplitSpec())
sets = {"mnist": load_embedded("mnist", "test").images, "fashion": load_embedded("fashion", "test").images}
if args.data_dir:
    sets["notmnist"] = notmnist.load(args.data_dir, allow_download=False).images
sets["uniform"] = torch.rand(10_000, 1, 28, 28, generator=torch.Generator().manual_seed(NOISE_SEED))
f_train, y = features(train.images), train.labels.numpy()
feats = {k: features(v) for k, v in sets.items()}
last = getattr(net, LAST_LAYER[args.backbone])
W, b = last.weight.detach().double().numpy(), last.bias.detach().double().numpy()
dim = args.dim or f_train.shape[1] // 2

# Mahalanobis: distance to the nearest class mean under the tied covariance (pinv: some ReLU units may be dead)
mus = np.stack([f_train[y == k].mean(0) for k in range(10)])
prec = np.linalg.pinv(sum((f_train[y == k] - mus[k]).T @ (f_train[y == k] - mus[k]) for k in range(10)) / len(y))


def mahalanobis(f: np.ndarray) -> np.ndarray:
    return -np.stack([np.einsum("ij,jk,ik->i", f - mu, prec, f - mu) for mu in mus], 1).min(1)


# ViM: residual of f - u outside the `dim` leading principal directions about u, weighted by alpha
u = -np.linalg.pinv(W) @ b
eigval, eigvec = np.linalg.eigh((f_train - u).T @ (f_train - u) / len(f_train))
outside = eigvec[:, np.argsort(eigval)[::-1][dim:]]


def residual(f: np.ndarray) -> np.ndarray:
    return np.linalg.norm((f - u) @ outside, axis=1)


def energy(f: np.ndarray) -> np.ndarray:
    z = f @ W.T + b
    return z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))


alpha = (f_train @ W.T + b).max(1).mean() / residual(f_train).mean()
scores = {name: {k: fn(f) for k, f in feats.items()} for name, fn in (
    ("Mahalanobis", mahalanobis), ("-residual", lambda f: -residual(f)),
    ("feature norm", lambda f: np.linalg.norm(f, axis=1)),
    ("ViM", lambda f: energy(f) - alpha * residual(f)), ("energy", energy))}
print(f"{args.checkpoint}: {args.backbone}, {f_train.shape[1]} features, ViM dim {dim}, alpha {alpha:.3f}, "
      f"{len(y)} training images")
print(f"{'set':9s}{'n':>7s}{'median norm':>13s}" + "".join(f"{name:>14s}" for name in scores) + "   (OOD AUROC)")
for k, f in feats.items():
    row = f"{k:9s}{len(f):7d}{np.median(np.linalg.norm(f, axis=1)):13.2f}"
    if k != "mnist":
        labels = np.r_[np.ones(len(feats["mnist"])), np.zeros(len(f))]
        row += "".join(f"{100 * roc_auc_score(labels, np.r_[s['mnist'], s[k]]):14.2f}" for s in scores.values())
    print(row)
