"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, CVPR 2017), one per model.

``uap:xi=XI,p=inf|2`` computes a single perturbation v on training images against the method's ``classifier``
(eval mode) and adds it to every MNIST test image (clipped to [0, 1]). Algorithm 1 of the paper: v = 0; pass over
the shuffled training images; for each image x whose label v does not change (k(x + v) == k(x)), find the minimal
perturbation dv sending x + v across the nearest decision boundary with DeepFool (L2, overshoot 0.02, at most 10
iterations, as in the authors' code), then project v + dv onto the l_p ball of radius xi. After each pass, the
fooling rate on the training images (against the clean predictions) is measured; stop when it reaches 1 - delta
(delta = 0.2), after ``passes`` passes, or when the time budget ``budget`` (seconds, default 120) is spent.

Images: ``n`` (default 1000) training images drawn with a fixed seed from the 60k. Perturbed images are clipped to
[0, 1] whenever the model sees them (the paper's ImageNet code does not clip; pixel validity matters on MNIST).

Cache: v is stored under ``<cache_dir>/uap/<key>.pt``, keyed by a content hash of the classifier's weights (plus
its class name and the UAP parameters). Methods sharing a classifier (msp, mcdropout and post-hoc scorers on the
same baseline) therefore share one perturbation. Extra rows: ``uap_fooling_rate`` (test set, against the clean
predictions of the classifier), ``uap_train_fooling_rate``, ``gen_seconds`` (of the original computation, also
on a cache hit), ``uap_passes``, ``uap_norm`` (l_p norm of v).
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
from bench.errors import UsageError
from bench.utils import atomic_write_bytes, stable_hash

UAP_SEED = 2017
UAP_VERSION = 1  # bump when the algorithm changes, to invalidate cached perturbations
DEFAULTS = ("uap:xi=0.2,p=inf", "uap:xi=4,p=2")


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
        with _single_thread(images.device):
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


class _single_thread:
    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"

    def __enter__(self) -> None:
        if self.cpu:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.cpu:
            torch.set_num_threads(self.threads)


def model_hash(model: nn.Module) -> str:
    """Content hash of a module's state (weights and buffers) and class: the identity of an attacked model."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def parse(params: str) -> dict[str, object]:
    q = parse_params(params, "uap", {"xi": float, "p": str, "n": int, "passes": int, "budget": float,
                                     "delta": float})
    if "xi" not in q or float(q["xi"]) <= 0 or q.get("p", "inf") not in ("inf", "2"):  # type: ignore[arg-type]
        raise UsageError(f"uap:{params}: needs xi > 0 and p in inf|2, e.g. uap:xi=0.2,p=inf")
    if not 0 < float(q.get("delta", 0.2)) < 1:  # type: ignore[arg-type]
        raise UsageError(f"uap:{params}: delta must be in (0, 1)")
    return {"xi": float(q["xi"]), "p": q.get("p", "inf"), "n": int(q.get("n", 1000)),  # type: ignore[arg-type]
            "passes": int(q.get("passes", 10)), "budget": float(q.get("budget", 120.0)),  # type: ignore[arg-type]
            "delta": float(q.get("delta", 0.2))}  # type: ignore[arg-type]


def cache_path(cache_dir: Path | None, model: nn.Module, q: dict[str, object]) -> Path | None:
    """Where the perturbation of ``model`` for parsed parameters ``q`` is cached (None without a cache dir);
    also read by the gallery (bench/gallery.py) to show each model's saved perturbation."""
    if cache_dir is None:
        return None
    key = stable_hash({"model": model_hash(model), "uap": q, "seed": UAP_SEED, "version": UAP_VERSION})
    return Path(cache_dir) / "uap" / f"{key}.pt"


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
            train = ctx.embedded("mnist", "train")
            idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(UAP_SEED))[: q["n"]]
            x = to_float(train.images[idx]).to(device)
            v, stats = universal_perturbation(model, x, q["xi"], q["p"], q["delta"], q["passes"], q["budget"],
                                              num_classes=getattr(method, "num_classes", 10))
            hit = {"v": v.cpu(), "stats": stats}
            if path is not None:
                buf = io.BytesIO()
                torch.save(hit, buf)
                atomic_write_bytes(path, buf.getvalue())
        v = hit["v"].to(device)
        test = ctx.embedded("mnist", "test")
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
                                 check=lambda t: sorted(parse(t).items())),
              "universal adversarial perturbation per model (DeepFool inner step): uap:xi=XI,p=inf|2"
              "[,n=,passes=,budget=s,delta=]")
