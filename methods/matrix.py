"""Matrix scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017) of the baseline classifier's logits.

Probabilities become softmax(W z + b) with a full C x C matrix W and a bias b, fitted on the validation split by
minimising the mean NLL, the classifier frozen; the confidence is their maximum. Unlike temperature scaling this
can change the argmax, hence the accuracy (Guo et al. report that it overfits with many classes; with C = 10 and
6,000 validation images it has 110 parameters). Unregularised by default, as in Guo et al.; ``lam``/``mu`` add Kull
et al.'s (NeurIPS 2019) off-diagonal and intercept penalty (their "MS-ODIR").

``fit_affine`` here is the one fitting routine of the linear calibrators: vector scaling (methods/vector.py) is its
diagonal form, Dirichlet calibration (methods/dirichlet.py) its full form on log-probabilities. It starts from the
identity map (W = I, b = 0: the uncalibrated softmax) and runs L-BFGS with a strong-Wolfe line search in float64.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.datasets.mnist import ImageSet
from bench.errors import NotFittedError, UsageError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches
from bench.utils import single_thread


def odir_penalty(w: torch.Tensor, b: torch.Tensor, lam: float, mu: float) -> torch.Tensor:
    """Kull et al.'s ODIR term: lam / (C (C - 1)) * sum of squared off-diagonal entries of W + mu / C * sum b^2
    (the diagonal, which carries the per-class scale, is free)."""
    c = w.shape[0]
    off = w - torch.diag(torch.diagonal(w))
    off_term = off.square().sum() / (c * (c - 1)) if c > 1 else w.new_zeros(())
    return lam * off_term + mu * b.square().sum() / c


def fit_affine(x: torch.Tensor, labels: torch.Tensor, diagonal: bool = False, lam: float = 0.0, mu: float = 0.0,
               max_iter: int = 500, init: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (C, C), b (C,)), float64, minimising mean CE(x W^T + b, labels) + odir_penalty(W, b, lam, mu).
    ``diagonal`` restricts W to a diagonal (vector scaling). ``init`` (W, b) warm-starts; default the identity."""
    x, y = x.detach().double().cpu(), labels.detach().long().cpu()
    c = x.shape[1]
    if init is None:
        w0, b0 = torch.eye(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    else:
        w0, b0 = init[0].double().clone(), init[1].double().clone()
    w = (torch.diagonal(w0).clone() if diagonal else w0).requires_grad_(True)
    b = b0.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def matrix() -> torch.Tensor:
        return torch.diag(w) if diagonal else w

    def closure() -> torch.Tensor:
        opt.zero_grad()
        m = matrix()
        loss = F.cross_entropy(x @ m.T + b, y) + odir_penalty(m, b, lam, mu)
        loss.backward()
        return loss

    with torch.enable_grad(), single_thread(torch.device("cpu")):  # a small problem: threads only contend
        opt.step(closure)
    m, bias = matrix().detach(), b.detach()
    if not (torch.isfinite(m).all() and torch.isfinite(bias).all()):
        raise UsageError("linear calibration diverged (non-finite weights); check the validation split")
    return m, bias


@dataclass(frozen=True)
class MatrixConfig(Options):
    lam: float = option(0.0, ge=0)  # off-diagonal penalty (Kull et al.'s ODIR); 0 = Guo et al.'s plain fit
    mu: float = option(0.0, ge=0)  # intercept penalty (ODIR); 0 = Guo et al.'s plain fit
    max_iter: int = option(500, ge=1)  # L-BFGS iterations


class ValidationCalibrator(ConfidenceMethod):
    """Base of the post-hoc calibrators (vector, matrix, Dirichlet, histogram binning, isotonic): the shared
    baseline, frozen; ``_fit_logits`` fits the calibration map on the validation split's logits and labels."""

    training = Training.SHARED_BASELINE
    posthoc = True

    def _fit_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        raise NotImplementedError

    def _log_extra(self) -> dict[str, list[float]]:
        """Fitted scalars recorded in ``train_log.extra`` (e.g. the chosen penalties)."""
        return {}

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        logits, labels = map_batches(lambda x: model(x).float(), model, val, ctx.device)
        self._fit_logits(logits.cpu(), labels.cpu())
        if self.train_log is not None:
            extra = {**self.train_log.extra, **self._log_extra()}
            self.train_log = dataclasses.replace(self.train_log, extra=extra)

    def _not_fitted(self) -> NotFittedError:
        return NotFittedError(f"{self.name} is not fitted; call fit() or load_state_dict() first")


class LinearCalibrator(ValidationCalibrator):
    """Vector, matrix and Dirichlet calibration: (W, b) fitted on ``_inputs`` of the validation logits, stored in
    the checkpoint; probabilities softmax(inputs W^T + b)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight: torch.Tensor | None = None  # W (C, C), float64
        self.bias: torch.Tensor | None = None  # b (C,), float64

    def _inputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.double()

    def _fit_map(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _fit_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.weight, self.bias = self._fit_map(self._inputs(logits), labels)

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weight is None or self.bias is None:
            raise self._not_fitted()
        x = self._inputs(logits)
        probs = (x @ self.weight.to(x.device).T + self.bias.to(x.device)).softmax(1).float()
        return probs, probs.max(1).values

    def extra_state(self) -> dict[str, torch.Tensor]:
        if self.weight is None or self.bias is None:
            raise self._not_fitted()
        return {"weight": self.weight, "bias": self.bias}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.weight, self.bias = state["weight"].double().cpu(), state["bias"].double().cpu()


@register("matrix", "Post-hoc calibration: matrix scaling softmax(W z + b), fitted on validation NLL (Guo et al. "
          "2017); may change the argmax")
class MatrixScaling(LinearCalibrator):
    Config = MatrixConfig

    def _fit_map(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        return fit_affine(x, labels, diagonal=False, lam=cfg.lam, mu=cfg.mu, max_iter=cfg.max_iter)
