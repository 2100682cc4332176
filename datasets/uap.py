"""Universal adversarial perturbations, one per model: ``uap:xi=XI,p=inf|2[,algo=sgd|deepfool,...]``.

A single perturbation v is computed on training images against the method's ``classifier`` (eval mode) and added to
every MNIST test image (clipped to [0, 1]). Two algorithms:

- ``algo=sgd`` (the default; datasets/uap_sgd.py): batched stochastic gradient ascent on the clipped cross-entropy
  of the clean predictions, projected onto the l_p ball after every step (Shafahi et al., AAAI 2020). Options
  ``lr`` (first step as a fraction of xi, default 0.2), ``batch`` (100), ``beta`` (loss clip, 9).
- ``algo=deepfool``: Algorithm 1 of Moosavi-Dezfooli, Fawzi, Fawzi, Frossard (CVPR 2017), faithfully: v = 0; pass
  over the shuffled training images; for each image x whose label v does not change (k(x + v) == k(x)), find the
  minimal perturbation dv sending x + v across the nearest decision boundary with DeepFool (L2, overshoot 0.02, at
  most 10 iterations, as in the authors' code), then project v + dv onto the l_p ball of radius xi.

Both measure the fooling rate on the training images (against the clean predictions) after each pass and stop when
it reaches 1 - delta (delta = 0.2), after ``passes`` passes (default 10), or when the time budget ``budget``
(seconds, default 120) is spent. Radii: 0 < xi <= 1 for L-inf, 0 < xi <= 28 for L2 (pixel units).

Images: ``n`` (default 1000) training images drawn with a fixed seed from the 60k. Perturbed images are clipped to
[0, 1] whenever the model sees them (the paper's ImageNet code does not clip; pixel validity matters on MNIST).

Cache: v is stored under ``<cache_dir>/uap/<key>.pt``, keyed by a content hash of the classifier's weights (plus
its class name and the UAP parameters, ``cache_key``). Methods sharing a classifier (msp, mcdropout and post-hoc
scorers on the same baseline) therefore share one perturbation. Extra rows: ``uap_fooling_rate`` (test set, against
the clean predictions of the classifier), ``uap_train_fooling_rate``, ``gen_seconds`` (of the original computation,
also on a cache hit), ``uap_passes``, ``uap_norm`` (l_p norm of v).
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import torch
from torch import nn

from bench.datasets.adversarial import parse_params
from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.datasets.mnist import to_float
from bench.datasets.uap_sgd import sgd_perturbation
from bench.errors import UsageError
from bench.utils import atomic_write_bytes, single_thread, stable_hash

UAP_SEED = 2017
UAP_VERSION = 1  # bump when the algorithm changes, to invalidate cached perturbations
DEFAULTS = ("uap:xi=0.2,p=inf", "uap:xi=4,p=2")
SGD_LR, SGD_BATCH, SGD_BETA = 0.2, 100, 9.0  # first step = lr * xi; mini-batch; cross-entropy clipped at beta


def project(v: torch.Tensor, xi: float, p: str) -> torch.Tensor:
    """Projection onto the l_p ball of radius xi (p = 'inf' or '2'), as in the paper's code."""
    if p == "inf":
        return v.clamp(-xi, xi)
    norm = v.norm()
    return v * min(1.0, xi / float(norm)) if norm > 0 else v


def deepfool(model: nn.Module, x: torch.Tensor, label: int, num_classes: int, overshoot: float = 0.02,
             max_iter: int = 10) -> torch.Tensor:
    """L2 DeepFool (Moosavi-Dezfooli et al. 2016) of one image (1, C, H, W): the perturbation r that sends x + r
    out of class ``label``. One backward pass per iteration gives all class gradients (the image is repeated)."""
    r_tot = torch.zeros_like(x)
    eye = torch.eye(num_classes, device=x.device)
    for _ in range(max_iter):
        xr = (x + (1 + overshoot) * r_tot).clamp(0, 1).repeat(num_classes, 1, 1, 1).requires_grad_(True)
        logits = model(xr)
        if int(logits[0].argmax()) != label:
            break
        (grads,) = torch.autograd.grad((logits * eye).sum(), xr)  # grads[k] = d logit_k / dx
        f = logits[0].detach()
        w = grads - grads[label]
        fk = f - f[label]
        dist = fk.abs() / w.flatten(1).norm(dim=1).clamp_min(1e-12)
        dist[label] = float("inf")
        k = int(dist.argmin())
        r_tot = r_tot + (dist[k] + 1e-4) * w[k : k + 1] / w[k].norm().clamp_min(1e-12)
    return (1 + overshoot) * r_tot


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, v: torch.Tensor | None = None, batch: int = 2000) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        out.append(model((xb + v).clamp(0, 1) if v is not None else xb).argmax(1))
    return torch.cat(out)


def universal_perturbation(model: nn.Module, images: torch.Tensor, xi: float, p: str, delta: float = 0.2,
                           max_passes: int = 10, budget_s: float = 300.0, num_classes: int = 10, seed: int = UAP_SEED
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """Algorithm 1 of the paper. ``images``: float [0, 1] on the model's device. Returns v (1, C, H, W) and stats."""
    g = torch.Generator().manual_seed(seed)
    clean = _predict(model, images)
    v = torch.zeros_like(images[:1])
    t0 = time.perf_counter()
    fooling, passes, out_of_time = 0.0, 0, False
    while fooling < 1 - delta and passes < max_passes and not out_of_time:
        # one image at a time is latency-bound: on CPU one thread is much faster than several (no OpenMP
        # hand-offs, and no collapse when the cores are shared)
        with single_thread(images.device):
            for i in torch.randperm(len(images), generator=g).tolist():
                x = images[i : i + 1]
                with torch.no_grad():
                    same = int(model((x + v).clamp(0, 1)).argmax(1)) == int(clean[i])
                if same:
                    dv = deepfool(model, (x + v).clamp(0, 1), int(clean[i]), num_classes)
                    v = project(v + dv, xi, p)
                if time.perf_counter() - t0 > budget_s:
                    out_of_time = True
                    break
        passes += 1
        fooling = float((_predict(model, images, v) != clean).float().mean())
    norm = float(v.abs().max()) if p == "inf" else float(v.norm())
    return v.detach(), {"uap_train_fooling_rate": 100 * fooling, "uap_passes": float(passes),
                        "gen_seconds": time.perf_counter() - t0, "uap_norm": norm,
                        "uap_budget_hit": float(out_of_time)}


def model_hash(model: nn.Module) -> str:
    """Content hash of a module's state (weights and buffers) and class: the identity of an attacked model."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


ALGOS = ("sgd", "deepfool")
DEFAULT_ALGO = "sgd"
MAX_XI = {"inf": 1.0, "2": 28.0}  # pixel units: L-inf beyond 1 and L2 beyond 28 (= sqrt(784)) change nothing more
SGD_ONLY = ("lr", "batch", "beta")


def parse(params: str) -> dict[str, object]:
    """The parameters of ``uap:PARAMS`` with their defaults; a one-line UsageError for anything invalid (called when
    the run's eval sets are expanded, so before any training)."""
    q = parse_params(params, "uap", {"xi": float, "p": str, "n": int, "passes": int, "budget": float,
                                     "delta": float, "algo": str, "lr": float, "batch": int, "beta": float})
    p = str(q.get("p", "inf"))
    if "xi" not in q or p not in MAX_XI:
        raise UsageError(f"uap:{params}: needs xi > 0 and p in inf|2, e.g. uap:xi=0.2,p=inf")
    xi = float(q["xi"])  # type: ignore[arg-type]
    if not 0 < xi <= MAX_XI[p]:
        unit = "pixel units, images in [0, 1]" if p == "inf" else "sqrt(784), the L2 diameter of [0, 1] images"
        raise UsageError(f"uap:{params}: xi={xi:g} is outside (0, {MAX_XI[p]:g}] for p={p} ({unit}); "
                         f"e.g. uap:xi={0.2 if p == 'inf' else 4},p={p}")
    algo = str(q.get("algo", DEFAULT_ALGO))
    if algo not in ALGOS:
        raise UsageError(f"uap:{params}: unknown algo={algo!r}; use algo=sgd (batched stochastic gradient, "
                         "Shafahi et al. 2020) or algo=deepfool (Algorithm 1 of Moosavi-Dezfooli et al. 2017)")
    extra = [k for k in SGD_ONLY if k in q]
    if algo == "deepfool" and extra:
        raise UsageError(f"uap:{params}: {extra[0]}= applies to algo=sgd only")
    if not 0 < float(q.get("delta", 0.2)) < 1:  # type: ignore[arg-type]
        raise UsageError(f"uap:{params}: delta must be in (0, 1)")
    for k in ("n", "passes", "batch"):
        if k in q and int(q[k]) < 1:  # type: ignore[arg-type]
            raise UsageError(f"uap:{params}: {k} must be >= 1")
    for k in ("budget", "lr", "beta"):
        if k in q and not float(q[k]) > 0:  # type: ignore[arg-type]
            raise UsageError(f"uap:{params}: {k} must be > 0")
    out = {"xi": xi, "p": p, "n": int(q.get("n", 1000)), "passes": int(q.get("passes", 10)),  # type: ignore[arg-type]
           "budget": float(q.get("budget", 120.0)), "delta": float(q.get("delta", 0.2))}  # type: ignore[arg-type]
    if algo == "sgd":
        out.update(algo="sgd", lr=float(q.get("lr", SGD_LR)), batch=int(q.get("batch", SGD_BATCH)),  # type: ignore
                   beta=float(q.get("beta", SGD_BETA)))  # type: ignore[arg-type]
    return out


def cache_key(model_id: str, q: dict[str, object]) -> str:
    """Key of a cached perturbation. DeepFool's parameters carry no ``algo`` entry, so its keys are those written
    before ``algo=`` existed (its cached perturbations stay valid); an sgd key always holds ``algo: sgd`` and its
    step parameters, so the two algorithms can never share an entry."""
    return stable_hash({"model": model_id, "uap": q, "seed": UAP_SEED, "version": UAP_VERSION})


def cache_path(cache_dir: Path | None, model: nn.Module, q: dict[str, object]) -> Path | None:
    """Where the perturbation of ``model`` for parsed parameters ``q`` is cached (None without a cache dir);
    also read by the gallery (bench/gallery.py) to show each model's saved perturbation."""
    if cache_dir is None:
        return None
    return Path(cache_dir) / "uap" / f"{cache_key(model_hash(model), q)}.pt"


def _build(ctx: EvalContext, method, params: str) -> EvalData:
    q = parse(params)
    model = method.classifier
    device = next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        path = cache_path(ctx.cache_dir, model, q)
        hit = torch.load(path, map_location="cpu", weights_only=True) if path is not None and path.exists() else None
        if hit is None:
            train = ctx.id_part("train")  # MNIST's 60k, or the user's --data training part
            idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(UAP_SEED))[: q["n"]]
            x = to_float(train.images[idx]).to(device)
            if q.get("algo") == "sgd":
                v, stats = sgd_perturbation(model, x, _predict(model, x), q["xi"], q["p"], passes=q["passes"],
                                            batch_size=q["batch"], lr=q["lr"], beta=q["beta"], delta=q["delta"],
                                            budget_s=q["budget"], seed=UAP_SEED)
            else:
                v, stats = universal_perturbation(model, x, q["xi"], q["p"], q["delta"], q["passes"], q["budget"],
                                                  num_classes=getattr(method, "num_classes", 10))
            hit = {"v": v.cpu(), "stats": stats}
            if path is not None:
                buf = io.BytesIO()
                torch.save(hit, buf)
                atomic_write_bytes(path, buf.getvalue())
        v = hit["v"].to(device)
        test = ctx.id_part("test")
        n = ctx.cap(len(test))
        x = to_float(test.images[:n]).to(device)
        fooled = (_predict(model, x, v) != _predict(model, x)).float().mean()
    finally:
        for m, mode in modes:
            m.train(mode)
    extra = {**hit["stats"], "uap_fooling_rate": 100 * float(fooled)}
    adv = (x + v).clamp(0, 1).cpu()
    return EvalData(f"uap:{params}", adv, test.labels[:n], "id", "uap", severity=f"{q['p']}:{q['xi']:g}", extra=extra)


EVAL_SETS.add("uap", EvalSetSpec(_build, offline=True, needs_model=True, family=True, defaults=DEFAULTS,
                                 report_group="adversarial", any_shape=True,
                                 check=lambda t: sorted(parse(t).items())),
              "universal adversarial perturbation per model: uap:xi=XI,p=inf|2[,algo=sgd|deepfool,n=,passes=,"
              "budget=s,delta=,lr=,batch=,beta=]")
