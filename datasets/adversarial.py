"""Adversarial shifts of the MNIST test set, made with torchattacks on [0, 1] pixels (our models normalise inside).

- ``fgsm:eps=E``: white-box FGSM x' = clip(x + E * sign(grad_x CE(f(x), y)), 0, 1) against each method's own
  ``classifier`` (true labels, the model in eval mode), via ``torchattacks.FGSM``.
- ``pgd:eps=E[,steps=S]``: white-box L-inf PGD (Madry et al. 2018) via ``torchattacks.PGD``, random start, step
  2.5 * E / S, S = 20 by default; the random start is seeded so a set is reproducible.
- ``fgsm-transfer:eps=E[,source=BACKBONE]``: FGSM made on a fixed source model (a baseline of ``source``, lenet by
  default, trained with a fixed recipe and seed, cached) and shown to every method: a black-box transfer attack.

How stochastic and ensembled methods are attacked: always through ``method.classifier``, the differentiable
images -> logits module the method exposes, in eval mode. For the methods whose predictive averages random draws
that is their deterministic mean network: MC-dropout's network with dropout off, SWAG's SWA mean (Laplace's MAP
network likewise), i.e. the attack does not average gradients over the draws; the attacked images are then scored
by the method's own predictive. ``fgsm:eps=E,eot=K`` and ``pgd:eps=E,eot=K`` attack such a method with expectation
over transformation instead (datasets/eot.py: the mean of K gradient samples per step through
``method.eot_classifier()``, which draws the method's randomness anew at every pass — dropout masks, SWAG weight
samples — from a fixed seed); their rows carry shift ``fgsm-eot`` / ``pgd-eot`` and ``eot_samples``. A method
without randomness given ``eot=K`` gets the deterministic attack (its expectation is itself; ``eot_samples`` = 1).
``clean_accuracy`` / ``robust_accuracy`` are always those of the deterministic classifier.
A deep ensemble exposes the averaged ensemble as its classifier, so it is
attacked as a whole. Each set carries ``gen_seconds`` (time to craft it) and ``clean_accuracy`` /
``robust_accuracy`` of the attacked classifier as extra result rows.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.datasets.mnist import to_float
from bench.errors import UsageError

EPS_SWEEP = (0.05, 0.1, 0.2, 0.3)
ATTACK_BATCH = 1000
PGD_SEED = 777
SOURCE_SEED = 1000  # the transfer source's init seed: distinct from the run seeds people use (0, 1, 2, ...)


def parse_params(text: str, family: str, allowed: dict[str, type]) -> dict[str, object]:
    """``"eps=0.1,steps=20"`` -> {"eps": 0.1, "steps": 20}, checked against ``allowed`` (name -> type)."""
    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise UsageError(f"{family}:{text}: bad parameter {part!r}; use {family}:" +
                             ",".join(f"{k}=..." for k in allowed))
        if key in out:  # the later value would win silently
            raise UsageError(f"{family}:{text}: parameter {key} is given twice; give it once")
        try:
            out[key] = allowed[key](value)
        except ValueError:
            raise UsageError(f"{family}:{text}: {key}={value!r} is not a valid {allowed[key].__name__}") from None
    return out


def parse_eps(params: dict[str, object], family: str, text: str) -> float:
    eps = params.get("eps")
    if eps is None or not 0 < float(eps) <= 1:  # type: ignore[arg-type]
        raise UsageError(f"{family}:{text}: needs eps in (0, 1], e.g. {family}:eps=0.1")
    return float(eps)  # type: ignore[arg-type]


def run_attack(attack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
               batch_size: int = ATTACK_BATCH) -> tuple[torch.Tensor, dict[str, float]]:
    """Attack in batches on ``device``; returns the adversarial images (float [0, 1], CPU) and extra rows:
    gen_seconds, clean and robust accuracy (%) of ``model`` in eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    out, clean_ok, adv_ok = [], 0, 0
    try:
        t0 = time.perf_counter()
        for i in range(0, len(images), batch_size):
            x = to_float(images[i : i + batch_size]).to(device)
            y = labels[i : i + batch_size].to(device)
            out.append(attack(x, y).detach())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        with torch.inference_mode():
            for i, adv in zip(range(0, len(images), batch_size), out):
                y = labels[i : i + batch_size].to(device)
                clean_ok += int((model(to_float(images[i : i + batch_size]).to(device)).argmax(1) == y).sum())
                adv_ok += int((model(adv).argmax(1) == y).sum())
    finally:
        for m, mode in modes:
            m.train(mode)
    n = max(len(images), 1)
    adv = torch.cat(out).cpu() if out else torch.empty(0, *images.shape[1:])
    return adv, {"gen_seconds": seconds, "clean_accuracy": 100.0 * clean_ok / n, "robust_accuracy": 100.0 * adv_ok / n}


def fgsm(model: nn.Module, eps: float):
    import torchattacks

    return torchattacks.FGSM(model, eps=eps)


def _test(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    test = ctx.id_part("test")  # MNIST test, or the user's --data test part
    n = ctx.cap(len(test))
    return test.images[:n], test.labels[:n]


def parse_eot(params: dict[str, object], family: str, text: str) -> int:
    """``eot=K`` (K >= 1 gradient samples per step, stochastic methods only); 0 = the deterministic attack."""
    k = int(params.get("eot", 0))  # type: ignore[arg-type]
    if "eot" in params and k < 1:
        raise UsageError(f"{family}:{text}: eot={k} samples; EOT needs eot >= 1 (or leave eot out for the "
                         f"deterministic attack)")
    return k


def check_fgsm(params: str) -> tuple[float, int]:
    """(eps, eot) of ``fgsm:PARAMS``, or a one-line UsageError; two spellings of one attack parse equal."""
    p = parse_params(params, "fgsm", {"eps": float, "eot": int})
    return parse_eps(p, "fgsm", params), parse_eot(p, "fgsm", params)


def check_pgd(params: str) -> tuple[float, int, int]:
    """(eps, steps, eot) of ``pgd:PARAMS``, or a one-line UsageError; two spellings of one attack parse equal."""
    p = parse_params(params, "pgd", {"eps": float, "steps": int, "eot": int})
    steps = int(p.get("steps", 20))  # type: ignore[arg-type]
    if steps < 1:
        raise UsageError(f"pgd:{params}: steps must be >= 1")
    return parse_eps(p, "pgd", params), steps, parse_eot(p, "pgd", params)


def _eot_attack(method, samples: int, make):
    """The EOT attack of a method with randomness (``samples`` gradients per step through
    ``method.eot_classifier()``), or ``None`` when the deterministic attack applies (no ``eot=``, or a method
    without randomness: its expectation is itself)."""
    model = method.eot_classifier() if samples else None
    if model is None:
        return None
    return lambda x, y: make(model, x, y)


def _run(attack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
         seeded: bool) -> tuple[torch.Tensor, dict[str, float]]:
    if not seeded:
        return run_attack(attack, model, images, labels, device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(PGD_SEED)  # random starts and dropout masks: a set is reproducible
        return run_attack(attack, model, images, labels, device)


def _fgsm(ctx: EvalContext, method, params: str) -> EvalData:
    from bench.datasets.eot import eot_fgsm

    p = parse_params(params, "fgsm", {"eps": float, "eot": int})
    eps, samples = parse_eps(p, "fgsm", params), parse_eot(p, "fgsm", params)
    model = method.classifier
    images, labels = _test(ctx)
    eot = _eot_attack(method, samples, lambda net, x, y: eot_fgsm(net, x, y, eps, samples))
    adv, extra = _run(eot or fgsm(model, eps), model, images, labels, _device(model, ctx), seeded=eot is not None)
    shift = "fgsm-eot" if samples else "fgsm"
    if samples:
        extra["eot_samples"] = float(samples if eot is not None else 1)
    return EvalData(f"fgsm:{params}", adv, labels, "id", shift, severity=f"{eps:g}", extra=extra)


def _pgd(ctx: EvalContext, method, params: str) -> EvalData:
    import torchattacks

    from bench.datasets.eot import eot_pgd

    check_pgd(params)
    p = parse_params(params, "pgd", {"eps": float, "steps": int, "eot": int})
    eps, steps = parse_eps(p, "pgd", params), int(p.get("steps", 20))  # type: ignore[arg-type]
    samples = parse_eot(p, "pgd", params)
    model = method.classifier
    images, labels = _test(ctx)
    alpha = 2.5 * eps / steps
    eot = _eot_attack(method, samples, lambda net, x, y: eot_pgd(net, x, y, eps, alpha, steps, samples))
    attack = eot or torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    adv, extra = _run(attack, model, images, labels, _device(model, ctx), seeded=True)
    shift = "pgd-eot" if samples else "pgd"
    if samples:
        extra["eot_samples"] = float(samples if eot is not None else 1)
    return EvalData(f"pgd:{params}", adv, labels, "id", shift, severity=f"{eps:g}", extra=extra)


def _device(model: nn.Module, ctx: EvalContext) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else ctx.device


def source_model(ctx: EvalContext, backbone: str = "lenet") -> nn.Module:
    """The fixed transfer source: a plain baseline of ``backbone`` (seed 1000, 3 epochs of Adam lr 2e-3, batch
    128, the default 90/10 split of the run's 60k training images: MNIST's, or the benchmark's), trained once and
    kept in the checkpoint cache."""
    from bench.cache import CheckpointCache
    from bench.datasets.splits import SplitSpec, split
    from bench.methods.core.base import FitContext
    from bench.methods.core.training import TrainRecipe

    key = ("source", backbone)
    if key not in ctx._cache:
        spec = SplitSpec(data=ctx.data.split_name) if ctx.data is not None else SplitSpec()
        recipe = TrainRecipe(optimizer="adam", lr=2e-3, batch_size=128, epochs=3)
        cache = CheckpointCache(ctx.cache_dir) if ctx.cache_dir is not None else None
        fit = FitContext(device=ctx.device, recipe=recipe, split_id=spec.split_id, cache=cache)
        train, val = split(ctx.id_part("train"), spec)
        model, _, _ = fit.train_baseline(backbone, 10, SOURCE_SEED, train.to(ctx.device), val.to(ctx.device))
        ctx._cache[key] = model.to(ctx.device).eval()
    return ctx._cache[key]


def _fgsm_transfer(ctx: EvalContext, params: str) -> EvalData:
    p = parse_params(params, "fgsm-transfer", {"eps": float, "source": str})
    eps = parse_eps(p, "fgsm-transfer", params)
    model = source_model(ctx, str(p.get("source", "lenet")))
    images, labels = _test(ctx)
    adv, extra = run_attack(fgsm(model, eps), model, images, labels, _device(model, ctx))
    extra = {f"source_{k}": v for k, v in extra.items()}
    return EvalData(f"fgsm-transfer:{params}", adv, labels, "id", "fgsm-transfer", severity=f"{eps:g}", extra=extra)


def _check_transfer(params: str) -> tuple[float, str]:
    p = parse_params(params, "fgsm-transfer", {"eps": float, "source": str})
    return parse_eps(p, "fgsm-transfer", params), str(p.get("source", "lenet"))


EVAL_SETS.add("fgsm", EvalSetSpec(_fgsm, offline=True, needs_model=True, family=True,
                                  defaults=tuple(f"fgsm:eps={e:g}" for e in EPS_SWEEP), check=check_fgsm,
                                  report_group="adversarial", any_shape=True),
              "white-box FGSM on each method's classifier: fgsm:eps=E[,eot=K] (bare fgsm: eps 0.05, 0.1, 0.2, 0.3;"
              " eot=K: MC-dropout and SWAG attacked through their random draws, K gradient samples per step)")
EVAL_SETS.add("pgd", EvalSetSpec(_pgd, offline=True, needs_model=True, family=True,
                                 defaults=tuple(f"pgd:eps={e:g}" for e in EPS_SWEEP), check=check_pgd,
                                 report_group="adversarial", any_shape=True),
              "white-box L-inf PGD (random start, 20 steps): pgd:eps=E[,steps=S,eot=K]")
EVAL_SETS.add("fgsm-transfer", EvalSetSpec(_fgsm_transfer, offline=True, family=True,
                                           defaults=tuple(f"fgsm-transfer:eps={e:g}" for e in EPS_SWEEP),
                                           check=_check_transfer, report_group="adversarial"),
              "FGSM made on a fixed source model (lenet, seed 1000): fgsm-transfer:eps=E[,source=BACKBONE]")
