"""``python -m bench uap-sweep``: universal-perturbation fooling rate against radius, per algorithm, as a plot.

For every method (fitted or loaded from the checkpoint cache exactly as ``bench run`` does, with the profile's recipe
and split), every algorithm (``uap:algo=sgd`` and ``uap:algo=deepfool``) and every radius of the L-inf and L2
sweeps, the eval set ``uap:xi=XI,p=P,algo=A[,PARAMS]`` is built (the perturbation is cached per model, as in a run)
and its test fooling rate and generation time are recorded. Written to ``--out``: ``results.csv`` (tidy rows:
``eval_set`` = the set's name, ``shift=uap``, ``severity=p:xi``, metrics ``uap_fooling_rate``,
``uap_train_fooling_rate``, ``gen_seconds``, ``uap_passes``, ``uap_norm``), a manifest, and ``uap_sweep.png`` /
``.pdf``: one row per method, fooling rate against radius for L-inf and L2 (a line per algorithm) and the
generation seconds of each (log scale). ``gen_seconds`` of a cached perturbation is that of its first computation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.commands.run_config import add_config_flags, config_from_flags
from bench.errors import UsageError

LINF = "0.05,0.1,0.15,0.2,0.25,0.3"
L2 = "1,2,3,4,5,6"
METRICS = ("uap_fooling_rate", "uap_train_fooling_rate", "gen_seconds", "uap_passes", "uap_norm")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("uap-sweep", help="universal perturbations: fooling rate vs radius per algorithm, with a plot")
    p.add_argument("--methods", default="msp", help="comma-separated methods (default msp)")
    p.add_argument("--algos", default="sgd,deepfool", help="comma-separated uap algorithms (default sgd,deepfool)")
    p.add_argument("--linf", default=LINF, help=f"L-inf radii, pixel units (default {LINF}; '' = none)")
    p.add_argument("--l2", default=L2, help=f"L2 radii (default {L2}; '' = none)")
    p.add_argument("--params", default="", help="extra uap parameters for every set, e.g. n=500,budget=60")
    p.add_argument("--seed", type=int, default=0, help="training seed of the methods (default 0)")
    add_config_flags(p, "checkpoint and perturbation cache (default results/cache)")
    p.add_argument("--out", type=Path, help="output directory (default results/runs/uap-sweep-<timestamp>)")
    p.set_defaults(handler=run)


def parse_radii(text: str, flag: str) -> list[float]:
    try:
        radii = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r} is malformed; use comma-separated numbers, e.g. {flag} 0.1,0.2") from None
    twice = sorted({r for r in radii if radii.count(r) > 1})
    if twice:  # refused, not merged: the sweep would otherwise hold fewer points than typed (as transfer --eps)
        raise UsageError(f"{flag} {text!r} repeats a radius ({', '.join(f'{r:g}' for r in twice)}); give each once")
    return radii


def set_names(algos: list[str], linf: list[float], l2: list[float], params: str) -> list[tuple[str, str, str, float]]:
    """(eval-set name, algo, p, xi) of the sweep, every name checked (one-line error before any training)."""
    from bench.datasets import evalsets

    tail = f",{params}" if params else ""
    out = [(f"uap:xi={xi:g},p={p},algo={a}{tail}", a, p, xi)
           for a in algos for p, radii in (("inf", linf), ("2", l2)) for xi in radii]
    if not out:
        raise UsageError("uap-sweep: no radius given (--linf, --l2)")
    evalsets.expand([name for name, *_ in out])
    return out


def plot(rows: list[dict], methods: list[str], algos: list[str], out_dir: Path) -> list[Path]:
    from bench.report.plots import _plt, _save, check_available

    check_available()
    plt = _plt()
    fig, axes = plt.subplots(len(methods), 3, figsize=(14, 3.6 * len(methods)), squeeze=False)
    norms = (("inf", "L-inf radius (pixel units)"), ("2", "L2 radius"))
    for r, method in enumerate(methods):
        mine = [x for x in rows if x["method"] == method]
        for c, (p, label) in enumerate(norms):
            ax = axes[r, c]
            for i, a in enumerate(algos):
                pts = sorted((x["xi"], x["uap_fooling_rate"]) for x in mine if x["p"] == p and x["algo"] == a)
                if pts:
                    ax.plot(*zip(*pts), marker="os^D"[i % 4], color=f"C{i}", label=a)
            ax.set(title=f"{method}: test fooling rate, {'L-inf' if p == 'inf' else 'L2'}", xlabel=label,
                   ylabel="fooling rate (%)", ylim=(0, 100))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[r, 2]
        for i, a in enumerate(algos):
            for p, style in (("inf", "-"), ("2", "--")):
                pts = sorted((x["xi"], x["gen_seconds"]) for x in mine if x["p"] == p and x["algo"] == a)
                if pts:
                    xs = [k + 1 for k in range(len(pts))]  # radius index: both sweeps on one axis
                    ax.plot(xs, [s for _, s in pts], style, marker="os^D"[i % 4], color=f"C{i}",
                            label=f"{a} {'L-inf' if p == 'inf' else 'L2'}")
        ax.set(title=f"{method}: generation time", xlabel="radius (k-th of its sweep, increasing)",
               ylabel="seconds (log)", yscale="log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, "uap_sweep")


def table(rows: list[dict], methods: list[str], algos: list[str]) -> Table:
    t = Table(title="UAP test fooling rate % (generation seconds)", title_justify="left")
    t.add_column("method", style="bold")
    t.add_column("radius", justify="right")
    for a in algos:
        t.add_column(a, justify="right")
    for m in methods:
        for p in ("inf", "2"):
            for xi in sorted({x["xi"] for x in rows if x["method"] == m and x["p"] == p}):
                cells = {x["algo"]: x for x in rows if x["method"] == m and x["p"] == p and x["xi"] == xi}
                t.add_row(m, f"{'Linf' if p == 'inf' else 'L2'} {xi:g}",
                          *[f"{cells[a]['uap_fooling_rate']:.1f} ({cells[a]['gen_seconds']:.1f}s)" if a in cells
                            else "" for a in algos])
    return t


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.cache import CheckpointCache
    from bench.commands.args import split_names as _split_names
    from bench.datasets import evalsets
    from bench.datasets.evalsets import EvalContext
    from bench.datasets.mnist import load_embedded
    from bench.datasets.splits import SplitSpec, split
    from bench.datasets.uap import ALGOS
    from bench.methods import METHODS
    from bench.methods.core.base import FitContext
    from bench.run.provenance import manifest_base
    from bench.run.rows import tidy
    from bench.run.store import RunStore, cell_key, check_new_out
    from bench.utils import resolve_device, to_jsonable

    methods = METHODS.expand(_split_names(args.methods))
    algos = _split_names(args.algos)
    for a in algos:
        if a not in ALGOS:
            raise UsageError(f"--algos: unknown algo {a!r}; use {','.join(ALGOS)}")
    sets = set_names(algos, parse_radii(args.linf, "--linf"), parse_radii(args.l2, "--l2"), args.params)
    cfg = config_from_flags(args)
    device = resolve_device(cfg.device)
    store = RunStore(args.out or Path("results/runs") / time.strftime("uap-sweep-%Y%m%d-%H%M%S"))
    check_new_out(store.dir)  # never over a user's results.csv, manifest.json or plot
    store.ensure_writable()
    store.write_manifest({**manifest_base(store, to_jsonable(cfg), [sys.executable, "-m", "bench", *sys.argv[1:]],
                                          device),
                          "kind": "uap-sweep",
                          "uap_sweep": {"methods": methods, "algos": algos, "sets": [s[0] for s in sets],
                                        "seed": args.seed}})
    spec = SplitSpec(cfg.split.val_fraction, cfg.split.split_seed, 1, 0, cfg.split.max_train)
    train, val = split(load_embedded("mnist", "train"), spec)
    fit = FitContext(device=device, recipe=cfg.train, split_id=spec.split_id, cache=CheckpointCache(cfg.cache_dir))
    ectx = EvalContext(max_eval=cfg.eval.max_eval, max_attack=cfg.eval.max_attack, device=device,
                       cache_dir=Path(cfg.cache_dir))
    rows: list[dict] = []
    for method in methods:
        config = METHODS.get(method).Config(**cfg.options_for(method))
        m = fit.fit_method(method, cfg.backbone, 10, args.seed, train, val, config=config)
        cell: list[dict] = []
        for name, algo, p, xi in sets:
            err.print(f"{method}: {name}", highlight=False, soft_wrap=True)
            extra = evalsets.build(name, ectx, m).extra
            rows.append({"method": method, "algo": algo, "p": p, "xi": xi, **{k: extra[k] for k in METRICS}})
            base = {"run_id": store.run_id, "method": method, "backbone": m.backbone, "seed": args.seed, "fold": 0,
                    "eval_set": name, "shift": "uap", "severity": f"{p}:{xi:g}"}
            cell += tidy({k: extra[k] for k in METRICS}, base)
        store.write_cell(cell_key(method, args.seed, 0, "uap-sweep"), cell)
    path = store.write_results_csv()
    out.print(table(rows, methods, algos))
    paths = plot(rows, methods, algos, store.dir)
    out.print(f"results: {path}; plot: {paths[0]}", highlight=False, soft_wrap=True)
    return 0
