"""SIRC, Softmax Information Retaining Combination (Xia & Bouganis, ACCV 2022, "Augmenting softmax information for
selective classification with out-of-distribution data"), post-hoc on the baseline's logits and penultimate features.

It combines a softmax confidence S1 (MSP, or negative entropy) with a feature-space confidence S2 (here the L1 norm
of the penultimate features, the paper's ||z||_1) so that S2 can only lower the confidence of samples it finds
atypical and never reorders what S1 separates well:

    C = -(S1_max - S1) * (1 + exp(-b (S2 - a))),     S1_max = 1 (MSP) or 0 (-entropy)
    a = mean(S2) - 3 std(S2),  b = 1 / std(S2)     over in-distribution data (std with n - 1)

bench scores -log[(S1_max - S1)(1 + exp(-b (S2 - a)))] = -log(S1_max - S1) - log(1 + exp(-b (S2 - a))), as the
authors' code (Guoxoug/SIRC) does: a strictly increasing function of the paper's C, so the same ranking, while
1 - MSP is computed in log space from the logits (it rounds to 0 for confident MNIST digits otherwise).

a and b come from the validation split (bench fits post-hoc statistics on validation data only); the authors'
code computes them on (up to 250,000 images of) the training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets.mnist import ImageSet
from bench.methods.base import FitContext, register
from bench.methods.doctor import log_softmax_and_complement
from bench.methods.features import FeatureScorer, require_features
from bench.methods.options import Options, option
from bench.methods.training import map_batches


@dataclass(frozen=True)
class SIRCConfig(Options):
    section = "sirc"
    s1: str = option("msp", one_of=("msp", "entropy"))  # the softmax score S1: MSP or -entropy
    sigmas: float = option(3.0, ge=0)  # a = mean - sigmas * std (3 in the paper)


def secondary_score(features: torch.Tensor) -> torch.Tensor:
    """S2 = ||f||_1 of the penultimate features (float64)."""
    return features.double().abs().sum(1)


def sirc_parameters(features: torch.Tensor, sigmas: float) -> dict[str, torch.Tensor]:
    """a = mean(S2) - sigmas * std(S2) and b = 1 / std(S2) (std with n - 1) of in-distribution features."""
    s2 = secondary_score(features)
    mean, std = s2.mean(), s2.std()
    return {"a": (mean - sigmas * std).reshape(1), "b": (1.0 / std.clamp(min=1e-12)).reshape(1)}


def log_s1_gap(logits: torch.Tensor, s1: str) -> torch.Tensor:
    """log(S1_max - S1): log(1 - max p) for MSP, log(entropy) for -entropy (float64; entropy floored at the
    smallest positive double so that a one-hot softmax stays finite)."""
    log_p, log_q = log_softmax_and_complement(logits)
    if s1 == "msp":
        return log_q.gather(1, log_p.argmax(1, keepdim=True)).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(1)
    return entropy.clamp(min=torch.finfo(torch.float64).tiny).log()


@register("sirc", "Post-hoc: SIRC, MSP (or -entropy) combined with the feature L1 norm, a and b from validation "
          "statistics (Xia & Bouganis 2022)")
class SIRC(FeatureScorer):
    Config = SIRCConfig
    fits_on_train = False  # its statistics come from the validation split, in _fit

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        require_features(model, self.name)
        f, _ = map_batches(lambda x: model.forward_features(x).float(), model, val, ctx.device)
        self._set_state(sirc_parameters(f.cpu(), self.config.sigmas))

    def confidence(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        a, b = self.state["a"].to(features.device), self.state["b"].to(features.device)
        x = -b * (secondary_score(features) - a)
        return -log_s1_gap(logits, self.config.s1) - torch.logaddexp(torch.zeros_like(x), x)
