"""SIRC, Softmax Information Retaining Combination (Xia & Bouganis, ACCV 2022, "Augmenting softmax information for
selective classification with out-of-distribution data"), post-hoc on the baseline's logits and penultimate features.

It combines a softmax confidence S1 (MSP, or negative entropy) with a feature-space confidence S2 (the L1 norm of
the penultimate features, the paper's ||z||_1, or minus ViM's residual, the paper's -Res) so that S2 can only lower
the confidence of samples it finds atypical and never reorders what S1 separates well:

    C = -(S1_max - S1) * (1 + exp(-b (S2 - a))),     S1_max = 1 (MSP) or 0 (-entropy)
    a = mean(S2) - 3 std(S2),  b = 1 / std(S2)     over in-distribution data (std with n - 1)

bench scores -log[(S1_max - S1)(1 + exp(-b (S2 - a)))] = -log(S1_max - S1) - log(1 + exp(-b (S2 - a))), as the
authors' code (Guoxoug/SIRC) does: a strictly increasing function of the paper's C, so the same ranking, while
1 - MSP is summed from the other classes in float64 (1 - max p rounds to 0 for confident MNIST digits otherwise).

Residual (``s2 = residual``): -||(f - u)^{P-perp}||, u = -W^+ b from the last layer (W, b) and P the ``dim``
leading eigenvectors of sum (f - u)(f - u)^T over the validation features (the authors' code: training features);
``dim`` = 0 takes ViM's rule (methods/vim.py: F // 2 below 512 features, 25 for lenet).

a and b (and the residual's subspace) come from the validation split (bench fits post-hoc statistics on validation
data only); the authors' code computes them on (up to 250,000 images of) the training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.methods.core.base import FitContext, register
from bench.methods.core.features import FeatureScorer, linear_head, require_features
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches
from bench.methods.doctor import softmax_and_top_complement
from bench.methods.vim import principal_dim


@dataclass(frozen=True)
class SIRCConfig(Options):
    s1: str = option("msp", one_of=("msp", "entropy"))  # the softmax score S1: MSP or -entropy
    s2: str = option("l1", one_of=("l1", "residual"))  # the feature score S2: ||f||_1 or -ViM residual
    sigmas: float = option(3.0, ge=0)  # a = mean - sigmas * std (3 in the paper)
    dim: int = option(0, ge=0)  # residual only: principal-subspace dimension; 0 = ViM's rule


def residual_space(features: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    """Origin u = -W^+ b and the basis R of the eigenvectors of sum (f - u)(f - u)^T beyond the ``dim`` leading ones
    (float64)."""
    u = -torch.linalg.pinv(w.double()) @ b.double()
    centred = features.double() - u
    _, vecs = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return {"origin": u, "residual_basis": vecs[:, : features.shape[1] - dim]}


def secondary_score(features: torch.Tensor, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """S2 (float64): ||f||_1, or -||R^T (f - u)|| when ``state`` holds the residual space."""
    if state is not None and "residual_basis" in state:
        return -((features.double() - state["origin"]) @ state["residual_basis"]).norm(dim=1)
    return features.double().abs().sum(1)


def sirc_parameters(features: torch.Tensor, sigmas: float, space: dict[str, torch.Tensor] | None = None
                    ) -> dict[str, torch.Tensor]:
    """a = mean(S2) - sigmas * std(S2) and b = 1 / std(S2) (std with n - 1) of in-distribution features, plus the
    residual space when given."""
    s2 = secondary_score(features, space)
    mean, std = s2.mean(), s2.std()
    return {**(space or {}), "a": (mean - sigmas * std).reshape(1), "b": (1.0 / std.clamp(min=1e-12)).reshape(1)}


def log_s1_gap(logits: torch.Tensor, s1: str) -> torch.Tensor:
    """log(S1_max - S1): log(1 - max p) for MSP, log(entropy) for -entropy (float64; both floored at the smallest
    positive double so that a one-hot softmax stays finite)."""
    p, _, _, q_top = softmax_and_top_complement(logits)
    if s1 == "msp":
        return q_top.log()
    entropy = torch.special.entr(p).sum(1)  # -p log p, 0 at p = 0
    return entropy.clamp(min=torch.finfo(torch.float64).tiny).log()


@register("sirc", "Post-hoc: SIRC, MSP (or -entropy) combined with the feature L1 norm or residual, a and b from "
          "validation statistics (Xia & Bouganis 2022)")
class SIRC(FeatureScorer):
    Config = SIRCConfig
    fits_on_train = False  # its statistics come from the validation split, in _fit

    @classmethod
    def preflight(cls, config, net, n_train):
        out = super().preflight(config, net, n_train)
        if config.s2 == "residual":
            f = require_features(net, cls.name)
            linear_head(net, f, cls.name)  # refused up front when the last layer is not affine
            out["dim_used"] = cls.residual_dim(config, f)
        return out

    @staticmethod
    def residual_dim(config: SIRCConfig, num_features: int) -> int:
        dim = config.dim or principal_dim(num_features)
        if not 0 < dim < num_features:
            raise UsageError(f"sirc.dim={dim} must be between 1 and the feature dimension - 1 ({num_features - 1}); "
                             "use --set sirc.dim=0 for the automatic choice")
        return dim

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        num_features = require_features(model, self.name)
        f, _ = map_batches(lambda x: model.forward_features(x).float(), model, val, ctx.device)
        space = None
        if self.config.s2 == "residual":
            w, b = linear_head(model, num_features, self.name)
            space = residual_space(f.cpu(), w, b, self.residual_dim(self.config, num_features))
        self._set_state(sirc_parameters(f.cpu(), self.config.sigmas, space))

    def confidence(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        state = {k: v.to(features.device) for k, v in self.state.items()}
        x = -state["b"] * (secondary_score(features, state) - state["a"])
        return -log_s1_gap(logits, self.config.s1) - torch.logaddexp(torch.zeros_like(x), x)
