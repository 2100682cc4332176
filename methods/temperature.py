"""Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017) of the baseline classifier.

One scalar T > 0 is fitted on the validation split by minimising the NLL of softmax(logits / T), with the
classifier frozen; probabilities become softmax(logits / T) and the confidence their maximum (MCP of the scaled
softmax). The argmax, hence the accuracy, is unchanged. Guo et al.'s code fits T directly with L-BFGS (lr 0.01,
50 iterations, start 1.5); we fit log T (so T stays positive) with L-BFGS and a strong-Wolfe line search from the
same start, which reaches the same 1-D optimum without depending on a step size. The fitted T is stored in the
checkpoint (``extra_state``), exposed as ``.temperature`` and recorded in ``train_log.extra["temperature"]``.
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


@dataclass(frozen=True)
class TemperatureConfig(Options):
    init: float = option(1.5, gt=0)  # starting T, as in Guo et al.'s code
    max_iter: int = option(100, ge=1)  # L-BFGS iterations


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, init: float = 1.5, max_iter: int = 100) -> float:
    """The T > 0 minimising mean NLL of softmax(logits / T) (float64, L-BFGS on log T)."""
    z, y = logits.detach().double().cpu(), labels.detach().cpu()
    log_t = torch.tensor([float(init)], dtype=torch.float64).log().requires_grad_(True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    if not (t > 0 and t < float("inf")):
        raise UsageError(f"temperature scaling diverged (T={t}); check the validation split")
    return t


@register("temperature", "Post-hoc: temperature scaling fitted on validation NLL, MCP of the scaled softmax")
class Temperature(ConfidenceMethod):
    Config = TemperatureConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._t: float | None = None

    @property
    def temperature(self) -> float:
        if self._t is None:
            raise NotFittedError("temperature is not fitted; call fit() or load_state_dict() first")
        return self._t

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        logits, labels = map_batches(lambda x: model(x).float(), model, val, ctx.device)
        self._t = fit_temperature(logits, labels, self.config.init, self.config.max_iter)
        if self.train_log is not None:
            extra = {**self.train_log.extra, "temperature": [self._t]}
            self.train_log = dataclasses.replace(self.train_log, extra=extra)

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = (logits / self.temperature).softmax(1)
        return probs, probs.max(1).values

    def extra_state(self) -> dict[str, float]:
        return {"temperature": self.temperature}

    def load_extra_state(self, state: dict[str, float]) -> None:
        self._t = float(state["temperature"])
