"""Isotonic regression (Zadrozny & Elkan, KDD 2002) of the baseline classifier, one-vs-rest with renormalisation.

For each class k, scikit-learn's ``IsotonicRegression`` (increasing, outputs in [0, 1], inputs outside the fitted
range clipped) maps the validation split's softmax probability p_k to the indicator "label is k" (least squares,
pool-adjacent-violators); at test time p_k is replaced by that non-decreasing piecewise-linear map q_k(p_k), and the
probabilities become q / sum(q) (Guo et al. 2017's multi-class extension), the confidence their maximum. A test
image whose q is 0 for every class keeps its uncalibrated probabilities. The renormalised map can change the argmax.
The checkpoint stores each class's breakpoints (scikit-learn's ``X_thresholds_``, ``y_thresholds_``); prediction
interpolates between them in torch as scikit-learn's ``predict`` does (tests/test_calibration.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import register
from bench.methods.core.options import Options
from bench.methods.histbin import renormalise
from bench.methods.matrix import ValidationCalibrator


@dataclass(frozen=True)
class IsotonicConfig(Options):
    pass  # nothing to choose: the fit is the least-squares monotone map


def fit_isotonic(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class, the breakpoints (x, y) (float64, x increasing) of scikit-learn's one-vs-rest isotonic fit."""
    from sklearn.isotonic import IsotonicRegression

    p, y = probs.double().cpu().numpy(), labels.cpu().numpy()
    out = []
    for k in range(p.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(p[:, k], (y == k).astype(float))
        out.append((torch.from_numpy(iso.X_thresholds_.astype("float64")),
                    torch.from_numpy(iso.y_thresholds_.astype("float64"))))
    return out


def interp(v: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through (xs, ys), xs increasing, with v clipped to [xs[0], xs[-1]]."""
    if len(xs) == 1:
        return ys.expand_as(v).clone()
    v = v.clamp(xs[0], xs[-1])
    hi = torch.searchsorted(xs, v, right=True).clamp(1, len(xs) - 1)
    lo = hi - 1
    t = (v - xs[lo]) / (xs[hi] - xs[lo])
    return ys[lo] + t * (ys[hi] - ys[lo])


@register("isotonic", "Post-hoc calibration: isotonic regression one-vs-rest + renormalisation (Zadrozny & Elkan "
          "2002, scikit-learn); may change the argmax")
class IsotonicCalibration(ValidationCalibrator):
    Config = IsotonicConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.maps: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per class (x, y) breakpoints

    def _fit_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.maps = fit_isotonic(logits.double().softmax(1), labels)

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.maps is None:
            raise self._not_fitted()
        p = logits.double().softmax(1)
        q = torch.stack([interp(p[:, k], xs.to(p.device), ys.to(p.device))
                         for k, (xs, ys) in enumerate(self.maps)], 1)
        probs = renormalise(q, p).float()
        return probs, probs.max(1).values

    def extra_state(self) -> dict[str, list[torch.Tensor]]:
        if self.maps is None:
            raise self._not_fitted()
        return {"x": [m[0] for m in self.maps], "y": [m[1] for m in self.maps]}

    def load_extra_state(self, state: dict[str, list[torch.Tensor]]) -> None:
        self.maps = [(x.double().cpu(), y.double().cpu()) for x, y in zip(state["x"], state["y"])]
