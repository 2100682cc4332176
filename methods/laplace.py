"""Last-layer Laplace approximation (Daxberger, Kristiadi, Immer, Eschenhagen, Bauer & Hennig, *Laplace Redux*,
NeurIPS 2021; library laplace-torch, ``Laplace(model, "classification", subset_of_weights="last_layer",
hessian_structure="full")``), post-hoc on the cached baseline.

The baseline's weights are the MAP estimate; only the last layer (W, b), read through ``forward_head``, gets a
posterior: theta = (W | b) with the penultimate features phi and an appended 1, a Gaussian N(theta_MAP, Sigma) with

    Sigma^-1 = H + delta * I,    H = sum_n Lambda_n (x) phi_n phi_n^T,    Lambda_n = diag(p_n) - p_n p_n^T

H is the full generalised Gauss-Newton of the summed training NLL over the last layer's C (F + 1) weights (for a
last layer it *is* the Hessian: the logits are linear in theta). The isotropic prior precision delta maximises the
Laplace log marginal likelihood, log p(D | theta_MAP) - 1/2 (log det Sigma^-1 - D log delta + delta ||theta_MAP||^2),
whose derivative in delta is monotone: its root is found by bisection on log delta from the eigenvalues of H (exact,
no step size; laplace-torch runs 100 Adam steps on log delta). Predictive (``laplace.link``): the logits are
Gaussian, f ~ N(z_MAP, J Sigma J^T) with J = I_C (x) (phi, 1); ``probit`` (default, laplace-torch's default) =
softmax(z_MAP / sqrt(1 + pi/8 diag var f)); ``mc`` = the mean softmax of ``samples`` draws of f. Confidence = the
predictive's maximum probability. The classifier white-box attacks see is the MAP network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from bench.errors import UsageError
from bench.methods.core.base import register
from bench.methods.core.features import FeatureScorer, linear_head, require_features
from bench.methods.core.options import Options, option

LINKS = ("probit", "mc")
CHUNK = 4096  # training rows per GGN accumulation step (bounds the (n, C*C) x (n, (F+1)^2) product)


@dataclass(frozen=True)
class LaplaceConfig(Options):
    link: str = option("probit", one_of=LINKS)  # predictive: probit approximation or Monte Carlo over the logits
    samples: int = option(100, ge=1)  # logit draws for link=mc (laplace-torch's n_samples)
    prior_precision: float = option(0.0, gt=0, also=(0.0,))  # delta; 0 = maximise the marginal likelihood
    max_params: int = option(4096, ge=1)  # refuse a last layer with more weights (the GGN is P x P in float64)


def augmented(features: torch.Tensor) -> torch.Tensor:
    """(phi, 1): the bias as a weight on a constant feature."""
    return torch.cat([features, features.new_ones(len(features), 1)], 1)


def last_layer_ggn(features: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """H (C (F+1) x C (F+1), float64) of the summed NLL over theta = (W | b), indexed c * (F+1) + i."""
    c, f1 = w.shape[0], w.shape[1] + 1
    h = torch.zeros(c * c, f1 * f1, dtype=torch.float64)
    for i in range(0, len(features), CHUNK):
        phi = augmented(features[i : i + CHUNK].double())
        p = (phi[:, :-1] @ w.double().T + b.double()).softmax(1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
        h += lam.reshape(len(p), -1).T @ (phi[:, :, None] * phi[:, None, :]).reshape(len(p), -1)
    return h.reshape(c, c, f1, f1).permute(0, 2, 1, 3).reshape(c * f1, c * f1)


def log_marglik_terms(eig: torch.Tensor, theta_sq: float, delta: torch.Tensor) -> torch.Tensor:
    """The delta-dependent part of the Laplace log marginal likelihood (the log-likelihood term is constant):
    -1/2 (sum log(e_k + delta) - D log delta + delta ||theta||^2), for each delta of a tensor."""
    d = delta.double()[..., None]
    return -0.5 * ((eig + d).log().sum(-1) - eig.numel() * d[..., 0].log() + d[..., 0] * theta_sq)


def optimal_prior_precision(eig: torch.Tensor, theta_sq: float) -> float:
    """argmax_delta of ``log_marglik_terms``: the root of g(delta) = D / delta - sum 1/(e_k + delta) - ||theta||^2,
    which falls monotonically from +inf to -||theta||^2 (each 1/(e + delta)^2 <= 1/delta^2): bisection on log delta."""
    eig = eig.clamp_min(0).double()
    if theta_sq <= 0 or float(eig.max()) <= 0:
        raise UsageError("laplace: the marginal likelihood has no maximum (zero last layer or zero Hessian); set "
                         "laplace.prior_precision")

    def g(log_delta: float) -> float:
        d = math.exp(log_delta)
        return eig.numel() / d - float((1 / (eig + d)).sum()) - theta_sq

    lo, hi = -30.0, 30.0
    while g(lo) < 0:
        lo -= 30
    while g(hi) > 0:
        hi += 30
    for _ in range(200):  # to float64 resolution of log delta
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def logit_covariance(phi: torch.Tensor, sigma: torch.Tensor, num_classes: int, full: bool) -> torch.Tensor:
    """J Sigma J^T per row of (phi, 1): (n, C, C) if ``full``, else its diagonal (n, C)."""
    f1 = phi.shape[1]
    s = sigma.reshape(num_classes, f1, num_classes, f1)
    if full:
        return torch.einsum("ni,aibj,nj->nab", phi, s, phi)
    blocks = s.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (C, F+1, F+1): Sigma_cc
    return torch.einsum("ni,aij,nj->na", phi, blocks, phi)


def check_size(w: torch.Tensor, config: LaplaceConfig, net: str) -> int:
    """C (F + 1), the last layer's weight count, or a one-line UsageError when it exceeds ``max_params``."""
    n = w.shape[0] * (w.shape[1] + 1)
    if n > config.max_params:
        raise UsageError(f"laplace: the last layer of {net} has {n:,} weights (C x (F+1)), above laplace.max_params="
                         f"{config.max_params} (its full GGN is {n:,}^2 float64 values); raise laplace.max_params if "
                         "memory allows, or use a backbone with fewer features")
    return n


@register("laplace", "Last-layer Laplace on the baseline (Daxberger et al. 2021): full GGN, prior precision by "
          "marginal likelihood, probit predictive; max probability")
class Laplace(FeatureScorer):
    Config = LaplaceConfig
    needs_linear_head = True

    @classmethod
    def preflight(cls, config, net, n_train):
        """Refuses, before any training, a last layer too large for a full GGN."""
        out = super().preflight(config, net, n_train)
        w, _ = linear_head(net, require_features(net, cls.name), cls.name)
        return {**out, "last_layer_params": check_size(w, config, type(net).__name__)}

    def _fit(self, train, val, ctx):
        super()._fit(train, val, ctx)
        if self.train_log is not None:  # the fitted delta beside the baseline's log (a copy: the cached one stays)
            extra = {**self.train_log.extra, "prior_precision": [float(self.state["prior_precision"])]}
            self.train_log = dataclasses.replace(self.train_log, extra=extra)

    def fit_features(self, features, labels, state):
        w, b = state["w"], state["b"]
        check_size(w, self.config, self.backbone)
        h = last_layer_ggn(features, w, b)
        theta = torch.cat([w, b[:, None]], 1).double().reshape(-1)
        eig, vec = torch.linalg.eigh(h)
        eig = eig.clamp_min(0)  # a PSD matrix's round-off negatives
        delta = self.config.prior_precision or optimal_prior_precision(eig, float(theta @ theta))
        sigma = (vec / (eig + delta)) @ vec.T  # (H + delta I)^-1 from the same eigenvectors
        return {"sigma": sigma.float(), "prior_precision": torch.tensor(delta),
                "log_marglik_terms": log_marglik_terms(eig, float(theta @ theta), torch.tensor(delta))}

    def score_features(self, features, logits):
        if self.state is None:
            return super().score_features(features, logits)  # raises the not-fitted error
        sigma = self.state["sigma"].to(features.device)
        phi = augmented(features.float())
        full = self.config.link == "mc"
        var = torch.cat([logit_covariance(phi[i : i + 2048], sigma, self.num_classes, full)
                         for i in range(0, len(phi), 2048)]) if len(phi) else logits.new_zeros(0, self.num_classes)
        if not full:
            probs = (logits / torch.sqrt(1 + math.pi / 8 * var.clamp_min(0))).softmax(1)
        else:
            probs = self.mc_predictive(logits, var)
        return probs, probs.max(1).values

    def mc_predictive(self, logits: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """Mean softmax of ``samples`` draws f ~ N(logits, cov) per row, from the method's own seeded stream."""
        gen = self.generator(1)
        # a tiny jitter: J Sigma J^T is PSD but may be singular to round-off (e.g. the softmax's shift direction)
        eye = torch.eye(cov.shape[-1], dtype=torch.float64)
        chol = torch.linalg.cholesky(cov.double().cpu() + 1e-10 * eye)
        z = torch.randn(self.config.samples, *logits.shape, generator=gen, dtype=torch.float64)
        f = logits.double().cpu() + torch.einsum("nab,snb->sna", chol, z)
        return f.softmax(-1).mean(0).float().to(logits.device)
