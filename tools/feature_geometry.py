"""Why Mahalanobis and ViM fail on the leaderboard's lenet: an independent float64 numpy computation of both
scores' ingredients on one trained baseline (docs/detectors.md, "Reading the leaderboard").

Prints, for MNIST test, Fashion-MNIST test and uniform noise (2,000 images each): the median L2 norm of the
penultimate features, the Mahalanobis score (class means and tied covariance of the first 54,000 training
images), ViM's residual outside the leading `dim` principal directions about u = -W^+ b, and the OOD AUROC
(in-distribution positive) of the Mahalanobis score, of the feature norm alone and of minus the residual alone.

Usage: python tools/feature_geometry.py CHECKPOINT [DIM]   (a lenet baseline, e.g. results/cache/msp-*.pt; DIM 25)
"""
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import bench.methods  # noqa: F401  (registers the methods)
from bench.datasets.mnist import load_embedded
from bench.methods.core.registry import METHODS

N_EVAL, N_TRAIN = 2000, 54000
ckpt = torch.load(sys.argv[1], weights_only=True)
dim = int(sys.argv[2]) if len(sys.argv) > 2 else 25
net = METHODS.get("msp")(backbone="lenet", seed=0).load_checkpoint(ckpt).classifier.eval()


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


train, test, fashion = (load_embedded("mnist", "train"), load_embedded("mnist", "test"),
                        load_embedded("fashion", "test"))
noise = torch.rand(N_EVAL, *test.images.shape[1:], generator=torch.Generator().manual_seed(0))
sets = {"mnist": as_float(test.images[:N_EVAL]), "fashion": as_float(fashion.images[:N_EVAL]), "uniform": noise}
with torch.no_grad():
    f_train = net.forward_features(as_float(train.images[:N_TRAIN])).double().numpy()
    feats = {k: net.forward_features(v).double().numpy() for k, v in sets.items()}
y = train.labels[:N_TRAIN].numpy()

mus = np.stack([f_train[y == k].mean(0) for k in range(10)])
cov = sum((f_train[y == k] - mus[k]).T @ (f_train[y == k] - mus[k]) for k in range(10)) / len(f_train)
prec = np.linalg.pinv(cov)


def mahalanobis(f: np.ndarray) -> np.ndarray:
    return -np.stack([np.einsum("ij,jk,ik->i", f - mu, prec, f - mu) for mu in mus], 1).min(1)


W, b = (p.detach().double().numpy() for p in (net.fc2.weight, net.fc2.bias))
u = -np.linalg.pinv(W) @ b
eigval, eigvec = np.linalg.eigh((f_train - u).T @ (f_train - u) / len(f_train))
outside = eigvec[:, np.argsort(eigval)[::-1][dim:]]

score = {k: mahalanobis(f) for k, f in feats.items()}
norm = {k: np.linalg.norm(f, axis=1) for k, f in feats.items()}
residual = {k: np.linalg.norm((f - u) @ outside, axis=1) for k, f in feats.items()}
for k in sets:
    print(f"{k:8s} median: feature norm {np.median(norm[k]):6.2f}   Mahalanobis {np.median(score[k]):7.1f}   "
          f"ViM residual {np.median(residual[k]):5.2f}")
labels = np.r_[np.ones(N_EVAL), np.zeros(N_EVAL)]
for k in ("fashion", "uniform"):
    auc = {name: 100 * roc_auc_score(labels, np.r_[s["mnist"], s[k]])
           for name, s in (("Mahalanobis", score), ("feature norm", norm),
                           ("-residual", {j: -r for j, r in residual.items()}))}
    print(f"{k:8s} OOD AUROC: " + "   ".join(f"{name} {v:.2f}" for name, v in auc.items()))
