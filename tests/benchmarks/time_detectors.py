"""Evaluation time of the ten detectors together against msp alone, side by side in one process, on the same cached
baseline and eval sets (docs/detectors.md, "Cost"). Not a pytest file: run it as

    python tests/benchmarks/time_detectors.py --profile quick --seed 0 --repeats 3
    python tests/benchmarks/time_detectors.py --detectors doctor,relu,sirc,pnorm   # other scorers, same protocol

It times what the runner does per eval set: msp = one logits pass + its scoring; the detectors (ODIN apart) = one
shared (features, logits) pass + the nine scorings; ODIN = its own predict (forward + backward per batch). Fitting
(the training-feature pass and each detector's statistics, once per baseline) is timed apart. Metric rows are the
same computation for every method and are not counted. Repeats alternate msp and the detectors; the medians are
reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.cache import CheckpointCache
from bench.config import load_profile, parse_set, resolve
from bench.datasets import evalsets
from bench.datasets.benchmarks import run_defaults
from bench.datasets.evalsets import EvalContext
from bench.datasets.mnist import load_embedded
from bench.datasets.source import embedded
from bench.datasets.splits import SplitSpec, split
from bench.methods import METHODS
from bench.methods.core.base import FitContext

DETECTORS = ["mahalanobis", "rmd", "knn", "vim", "react", "ash", "gen", "dice", "scale"]  # + odin, timed apart


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", default="")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", default="results/cache")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as bench run --set")
    ap.add_argument("--detectors", default=",".join(DETECTORS), help="the post-hoc scorers timed together")
    args = ap.parse_args()
    names = args.detectors.split(",")
    cfg = resolve([load_profile(args.profile), parse_set(args.set)],
                  {n: METHODS.get(n).Config for n in METHODS.names()})
    bs = cfg.eval.batch_size
    spec = SplitSpec(cfg.split.val_fraction, cfg.split.split_seed, 1, 0, cfg.split.max_train)
    ctx = FitContext(recipe=cfg.train, split_id=spec.split_id, cache=CheckpointCache(args.cache_dir))
    train, val = split(load_embedded("mnist", "train"), spec)
    set_names = evalsets.expand(args.datasets.split(",")) if args.datasets else run_defaults("mnist", embedded())
    ectx = EvalContext(data_dir=cfg.data_dir, max_eval=cfg.eval.max_eval, device=torch.device("cpu"),
                       cache_dir=cfg.cache_dir)
    sets = {n: evalsets.build(n, ectx).images for n in set_names}

    t0 = time.perf_counter()
    msp = ctx.fit_method("msp", cfg.backbone, 10, args.seed, train, val)  # the cached baseline (trains if absent)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    def make(n: str):  # with the --set options of that detector (knn.sample=..., react.percentile=...)
        cls = METHODS.get(n)
        return cls(cls.Config(**cfg.options_for(n)), backbone=cfg.backbone, seed=args.seed)

    dets = [make(n).fit(train, val, ctx) for n in names]
    t_fit = time.perf_counter() - t0
    odin = make("odin").fit(train, val, ctx)

    def run_msp() -> None:
        for x in sets.values():
            msp.predict_from_logits(msp.logits(x, batch_size=bs))

    def run_detectors() -> dict[str, float]:
        per = dict.fromkeys(["features pass", *names], 0.0)
        for x in sets.values():
            t = time.perf_counter()
            f, logits = dets[0].features(x, batch_size=bs)
            per["features pass"] += time.perf_counter() - t
            for name, d in zip(names, dets):
                t = time.perf_counter()
                d.predict_from_features(f, logits) if d.uses_features else d.predict_from_logits(logits)
                per[name] += time.perf_counter() - t
        return per

    def run_odin() -> None:
        for x in sets.values():
            odin.predict(x, batch_size=bs)

    run_msp(), run_detectors()  # warm-up
    t_msp, t_det, t_odin, parts = [], [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter(); run_msp(); t_msp.append(time.perf_counter() - t)  # noqa: E702
        t = time.perf_counter(); parts.append(run_detectors()); t_det.append(time.perf_counter() - t)  # noqa: E702
    t = time.perf_counter(); run_odin(); t_odin.append(time.perf_counter() - t)  # noqa: E702
    n_img = sum(len(x) for x in sets.values())
    m_msp, m_det = statistics.median(t_msp), statistics.median(t_det)
    print(f"backbone {cfg.backbone}, profile {args.profile}, seed {args.seed}, {len(train)} training images; "
          f"{len(sets)} eval sets ({', '.join(sets)}), {n_img} images; torch threads {torch.get_num_threads()}")
    print(f"baseline load {t_base:.2f} s; fit of the {len(names)} detectors (training features once + statistics) "
          f"{t_fit:.2f} s")
    print(f"msp alone:                 {m_msp:.2f} s  (runs {', '.join(f'{v:.2f}' for v in t_msp)})")
    print(f"{len(names)} detectors together:   {m_det:.2f} s  (runs {', '.join(f'{v:.2f}' for v in t_det)})")
    print(f"ratio detectors / msp:     {m_det / m_msp:.2f}x")
    print(f"odin alone:                {t_odin[0]:.2f} s  ({t_odin[0] / m_msp:.1f}x msp)")
    last = parts[-1]
    print("last detector run by part: " + ", ".join(f"{k} {v:.2f}" for k, v in last.items()))


if __name__ == "__main__":
    main()
