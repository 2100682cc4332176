"""Multi-layer Mahalanobis ensemble (Lee, Lee, Lee & Shin, NeurIPS 2018, the full method; OpenOOD v1's "MDS",
v1.5's "MDSEns") on the baseline classifier.

Per layer l (the feature maps of ``feature_list`` when the backbone has one, e.g. ``lenet5``'s three block outputs
and its 84-d features; else the penultimate features alone), a map (N, C, H, W) is average-pooled to (N, C).
``layers="blocks"`` (default) leaves the penultimate features out when there are other maps: the three block
outputs are what OpenOOD v1's LeNet returned as its feature list when its MNIST table was made (April 2022).
Class means mu_lk and one tied covariance S_l (the within-class covariance, divided by N) are fitted on the
training split's features. Then

    M_l(x)  = max_k -1/2 (f_l(x) - mu_lk)^T S_l^+ (f_l(x) - mu_lk)
    x'_l    = x - eps * sign(grad_x 1/2 d_l(x, closest mean))       (input pre-processing, one step per layer)
    confidence = b + sum_l w_l M_l(x'_l)

with sign(0) taken as +1 as in the reference code. The weights (w, b) are a logistic regression (ID = 1, OOD = 0)
fitted on validation data: ``n_val`` images of bench's validation split (never the test set) against a validation
OOD set, ``val_ood``:

- ``fgsm`` (default): FGSM adversarial versions of those same validation images, x + fgsm_eps * sign(grad CE),
  clipped to [0, 1], against the baseline with the true labels. This is Lee et al.'s "validation on adversarial
  samples" variant (their Table 2, no OOD data seen). fgsm_eps = 0.3, MNIST's usual L-inf budget: Lee et al.'s 0.05
  (CIFAR-10 / SVHN) leaves lenet5's channel-pooled maps as they were (clean vs FGSM AUROC 0.49-0.51 per layer), so
  the regression fits noise (docs/openood.md).

- ``notmnist``: the last 1,000 glyphs of the user's notMNIST (``--data-dir``; ``notmnist.N_VAL``), as OpenOOD fits
  its MDS weights on a notMNIST list disjoint from its test list. Those glyphs are then validation data: the run
  must test on ``ood:notmnist-test`` (the other 9,000), and is refused with ``ood:notmnist``. The weights are then
  tuned on one of the near-OOD test distributions, so the method's near-OOD numbers are not those of a detector
  that has seen no OOD data (docs/openood.md).

Lee et al.'s code picks eps from a list on the validation data too; here eps is one value (OpenOOD's setting,
0.0014), sweepable with ``--set mdsens.eps=``.

Deviation, for a fit that converges whatever the layers' score scales: the regression (scikit-learn's
``LogisticRegressionCV``, as both references) runs on standardised layer scores and the weights are mapped back
to raw scores, so its L2 penalty acts on standardised weights. Not a post-hoc scorer of shared logits: it needs input
gradients, like ODIN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.datasets import notmnist
from bench.datasets.mnist import ImageSet, to_float
from bench.errors import DataError, NotFittedError, UsageError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.features import require_features
from bench.methods.core.options import Options, option
from bench.methods.core.training import batches, eval_mode

VAL_OOD = ("fgsm", "notmnist")
LAYERS = ("blocks", "all")


@dataclass(frozen=True)
class MDSEnsConfig(Options):
    eps: float = option(0.0014, ge=0)  # input pre-processing step, [0, 1] pixel units (OpenOOD's noise 0.0014)
    val_ood: str = option("fgsm", one_of=VAL_OOD)  # validation OOD for the layer weights (module docstring)
    fgsm_eps: float = option(0.3, gt=0, le=1)  # FGSM step of the adversarial validation set (MNIST's usual 0.3)
    n_val: int = option(1000, ge=10)  # validation images and as many OOD ones (notMNIST: 1,000 at most)
    layers: str = option("blocks", one_of=LAYERS)  # blocks: feature_list less the penultimate features; all: every map


def pooled_layers(model: nn.Module, x: torch.Tensor, layers: str = "all") -> list[torch.Tensor]:
    """The layers' features (N, D_l): ``feature_list`` maps (whose last entry is the penultimate features)
    average-pooled over space; "blocks" drops that last entry when there are others."""
    maps = model.feature_list(x) if callable(getattr(model, "feature_list", None)) else [model.forward_features(x)]
    if layers == "blocks" and len(maps) > 1:
        maps = maps[:-1]
    return [m.mean(dim=(2, 3)) if m.dim() == 4 else m.flatten(1) for m in maps]


def squared_distances(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(N, K): (f_n - mu_k)^T P (f_n - mu_k) for every sample n and class k."""
    diff = f[:, None, :] - means[None]
    return torch.einsum("nkd,de,nke->nk", diff, precision, diff)


def fit_gaussians(f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means of the classes present (K, D) and the pseudo-inverse of the tied covariance (D, D), in float64
    (the covariance of pooled ReLU maps is often singular: dead channels)."""
    f = f.double()
    classes = torch.unique(y)
    means = torch.stack([f[y == k].mean(0) for k in classes])
    centred = f - means[torch.searchsorted(classes, y)]
    cov = centred.T @ centred / len(f)
    return means.float(), torch.linalg.pinv(cov, hermitian=True).float()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """x + eps * sign(grad_x CE(model(x), y)), clipped to [0, 1]."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (x.detach() + eps * g.sign()).clamp(0, 1)


def notmnist_validation(data_dir: Path | None) -> ImageSet:
    """notMNIST's validation glyphs (``notmnist.split``), from the run's data folder."""
    if data_dir is None:
        raise DataError("mdsens.val_ood=notmnist reads notMNIST from the run's data folder, and this fit has none; "
                        "give --data-dir, or use mdsens.val_ood=fgsm")
    return notmnist.split(notmnist.load(data_dir))[1]


def fit_combination(s_in: torch.Tensor, s_out: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression ID (1) vs OOD (0) on the layer scores (N, L): (w (L,), b) acting on raw scores."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV

    s = torch.cat([s_in, s_out]).double()
    target = torch.cat([torch.ones(len(s_in)), torch.zeros(len(s_out))]).numpy()
    mu, sd = s.mean(0), s.std(0).clamp_min(1e-12)  # standardised: one penalty scale for every layer
    folds = max(2, min(5, len(s_in), len(s_out)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs on separable data: the weights still rank
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.8 announces new defaults; the references' hold
        lr = LogisticRegressionCV(cv=folds, max_iter=1000, random_state=seed).fit(((s - mu) / sd).numpy(), target)
    w_std = torch.from_numpy(lr.coef_.reshape(-1)).double()
    w = w_std / sd
    b = float(lr.intercept_[0]) - float((w * mu).sum())
    return w.float(), torch.tensor(b, dtype=torch.float32)


@register("mdsens", "Lee et al.'s full Mahalanobis: per-layer class Gaussians, input pre-processing, layers weighted "
          "by a logistic regression on validation OOD (FGSM or notMNIST; OpenOOD's MDSEns)")
class MDSEnsemble(ConfidenceMethod):
    Config = MDSEnsConfig
    training = Training.SHARED_BASELINE
    needs_grad = True
    needs_features = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.state: dict[str, Any] | None = None  # means, precisions (lists, one per layer), weights, bias

    @classmethod
    def check_eval_sets(cls, config: MDSEnsConfig, datasets: list[str], data_dir: Path) -> None:
        if config.val_ood != "notmnist":
            return
        if "ood:notmnist" in datasets:
            raise UsageError(f"mdsens.val_ood=notmnist fits on the last {notmnist.N_VAL:,} glyphs of notMNIST, which "
                             "ood:notmnist tests on; test on ood:notmnist-test (the other glyphs) instead")
        if config.n_val > notmnist.N_VAL:
            raise UsageError(f"mdsens.n_val={config.n_val} is more than the {notmnist.N_VAL:,} notMNIST validation "
                             f"glyphs of mdsens.val_ood=notmnist; use mdsens.n_val={notmnist.N_VAL} or fewer")
        notmnist_validation(data_dir)  # read (or fetched) and checked now, not after the baseline is trained

    @property
    def forward_passes(self) -> int:
        layers = len(self.state["means"]) if self.state else 1
        return 1 + 2 * layers  # one forward with autograd on, per layer one backward and one perturbed forward

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)  # the run's cached baseline
        model = self._fitted_model()
        require_features(model, self.name)
        if len(val) < 10:
            raise UsageError(f"{self.name} fits its layer weights on the validation split, which has {len(val)} "
                             "images; it needs at least 10 (split.val_fraction)")
        with eval_mode(model), torch.inference_mode():
            per_batch = [(pooled_layers(model, x, self.config.layers), y)
                         for x, y in batches(train, 2048, None, ctx.device)]
        labels = torch.cat([y for _, y in per_batch]).cpu()
        fitted = [fit_gaussians(torch.cat([b[0][k] for b in per_batch]).cpu(), labels)
                  for k in range(len(per_batch[0][0]))]
        self.state = {"means": [m for m, _ in fitted], "precisions": [p for _, p in fitted]}
        n = min(self.config.n_val, len(val))
        idx = torch.randperm(len(val), generator=self.generator(101))[:n].to(val.images.device)
        x_in, y_in = to_float(val.images[idx]).to(ctx.device), val.labels[idx].to(ctx.device)
        with eval_mode(model):
            if self.config.val_ood == "notmnist":
                x_out = to_float(notmnist_validation(ctx.data_dir).images[:n]).to(ctx.device)
            else:
                x_out = fgsm(model, x_in, y_in, self.config.fgsm_eps)
            s_in, s_out = self.layer_scores(x_in), self.layer_scores(x_out)
        self.state["weights"], self.state["bias"] = fit_combination(s_in.cpu(), s_out.cpu(), self.seed)

    def layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L): each layer's Mahalanobis score after that layer's input pre-processing."""
        if self.state is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() or load_state_dict() first")
        model = self._fitted_model()
        p = next(model.parameters())
        means = [m.to(p.device) for m in self.state["means"]]
        precs = [m.to(p.device) for m in self.state["precisions"]]
        eps = self.config.eps
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(eps > 0)
            layers = pooled_layers(model, x, self.config.layers)
            steps = []
            for k, f in enumerate(layers):
                if eps == 0:
                    steps.append(x.detach())
                    continue
                closest = squared_distances(f, means[k], precs[k]).min(1).values
                # summed, not averaged: each image's step depends on its own gradient only, whatever the batch
                (g,) = torch.autograd.grad(0.5 * closest.sum(), x, retain_graph=k < len(layers) - 1)
                steps.append(x.detach() - eps * ((g >= 0).float() * 2 - 1))  # towards the closest class mean
        with torch.no_grad():
            scores = [-0.5 * squared_distances(pooled_layers(model, xs, self.config.layers)[k], means[k], precs[k])
                      .min(1).values
                      for k, xs in enumerate(steps)]
        return torch.stack(scores, 1)

    def combine(self, scores: torch.Tensor) -> torch.Tensor:
        """The fitted logistic regression's logit of "in-distribution" on layer scores (N, L)."""
        w, b = self.state["weights"].to(scores.device), self.state["bias"].to(scores.device)
        return scores @ w + b

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._fitted_model()
        with torch.no_grad():
            probs = model(x).softmax(1)  # the baseline's prediction: the detector changes only the confidence
        return probs, self.combine(self.layer_scores(x))

    def extra_state(self) -> dict[str, Any]:
        if self.state is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() first")
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.state.items()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.state = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
