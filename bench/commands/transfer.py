"""``python -m bench transfer``: the transferability matrix of adversarial examples.

Models: the plain baseline of every (backbone, init seed) pair, trained with the profile's recipe and split (the
same cached checkpoints ``bench run`` uses for msp). For each source model (a row) and eps, the MNIST test set
(``eval.max_eval`` of it) is attacked white-box (FGSM or PGD, as in ``datasets/adversarial.py``); each target
model (a column) is scored on those images. The diagonal is the white-box robust accuracy; off-diagonal cells are
black-box transfer. Printed as one table per eps and saved like a run: ``results.csv`` rows with
``method=baseline``, ``backbone``/``seed`` = the target, ``eval_set=transfer:<source>``, ``shift`` = the attack,
``severity`` = eps, metric ``accuracy`` (plus ``gen_seconds`` of crafting, on the source's own rows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.commands.run_config import add_config_flags, config_from_flags
from bench.errors import UsageError

ATTACKS = ("fgsm", "pgd")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="transferability matrix: adversarial examples of row models, accuracy of "
                                        "column models")
    p.add_argument("--backbones", default="lenet,smallconvnet", help="comma-separated backbones (default "
                                                                     "lenet,smallconvnet)")
    p.add_argument("--inits", type=int, default=2, help="initialisations (seeds 0..N-1) per backbone (default 2)")
    p.add_argument("--attack", default="fgsm", choices=ATTACKS)
    p.add_argument("--eps", default="0.1,0.2,0.3", help="comma-separated L-inf radii in [0, 1] pixel units")
    add_config_flags(p)
    p.add_argument("--out", type=Path, help="output directory (default results/runs/transfer-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def parse_eps(text: str) -> list[float]:
    try:
        eps = [float(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise UsageError(f"--eps {text!r} is malformed; use comma-separated numbers, e.g. --eps 0.1,0.2") from None
    if not eps or any(not 0 < e <= 1 for e in eps):
        raise UsageError(f"--eps {text!r}: give radii in (0, 1], e.g. --eps 0.1,0.2,0.3")
    if len(set(eps)) != len(eps):
        raise UsageError(f"--eps {text!r} repeats a radius; give each once")
    return eps


def make_attack(name: str, model: torch.nn.Module, eps: float):
    import torchattacks

    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)


def transfer_matrix(models: dict[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor, attack: str,
                    eps_list: list[float], device: torch.device) -> list[dict]:
    """Rows {source, target, eps, accuracy, gen_seconds}; ``source`` "clean" gives each target's clean accuracy."""
    from bench.datasets.adversarial import PGD_SEED, run_attack
    from bench.datasets.mnist import to_float

    def accuracy(model: torch.nn.Module, x: torch.Tensor) -> float:
        with torch.inference_mode():
            pred = torch.cat([model(to_float(x[i : i + 2000]).to(device)).argmax(1).cpu()
                              for i in range(0, len(x), 2000)])
        return 100.0 * float((pred == labels).float().mean())

    for m in models.values():
        m.eval()
    rows = [{"source": "clean", "target": t, "eps": 0.0, "accuracy": accuracy(m, images), "gen_seconds": 0.0}
            for t, m in models.items()]
    for eps in eps_list:
        for src, model in models.items():
            torch.manual_seed(PGD_SEED)
            adv, extra = run_attack(make_attack(attack, model, eps), model, images, labels, device)
            for tgt, target in models.items():
                rows.append({"source": src, "target": tgt, "eps": eps, "accuracy": accuracy(target, adv),
                             "gen_seconds": extra["gen_seconds"]})
    return rows


def matrix_table(rows: list[dict], eps: float, attack: str) -> Table:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows if r["source"] != "clean"))
    table = Table(title=f"{attack} eps={eps:g}: accuracy % of the column model on examples made on the row model "
                        "(diagonal = white-box)", title_justify="left")
    table.add_column("made on \\ scored by", style="bold", no_wrap=True)
    for t in targets:
        table.add_column(t, justify="right", no_wrap=True)
    index = {(r["source"], r["target"], r["eps"]): r["accuracy"] for r in rows}
    table.add_row("clean", *[f"{index[('clean', t, 0.0)]:.2f}" for t in targets])
    for s in sources:
        table.add_row(s, *[f"{index[(s, t, eps)]:.2f}" for t in targets])
    return table


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.cache import CheckpointCache
    from bench.commands.args import split_names as _split_names
    from bench.datasets.mnist import load_embedded
    from bench.datasets.splits import SplitSpec, split
    from bench.methods.core.backbones import BACKBONES
    from bench.methods.core.base import FitContext
    from bench.run.progress import Bars
    from bench.run.provenance import manifest_base
    from bench.run.rows import tidy
    from bench.run.store import RunStore, cell_key
    from bench.utils import resolve_device, to_jsonable

    backbones = _split_names(args.backbones)
    if not backbones:
        raise UsageError(f"--backbones {args.backbones!r} names no backbone; e.g. --backbones lenet,smallconvnet")
    if len(set(backbones)) != len(backbones):
        raise UsageError(f"--backbones {args.backbones!r} repeats a backbone; give each once (--inits sets how many "
                         "initialisations)")
    for b in backbones:
        if not b.startswith("timm:"):
            BACKBONES.get(b)
    if args.inits < 1:
        raise UsageError(f"--inits must be >= 1, got {args.inits}")
    eps_list = parse_eps(args.eps)
    cfg = config_from_flags(args)
    device = resolve_device(cfg.device)
    from bench.run.validate import check_writable

    check_writable(Path(cfg.cache_dir), "--cache-dir")
    store = RunStore(args.out or Path("results/runs") / time.strftime("transfer-%Y%m%d-%H%M%S"))
    if store.has_results():
        raise UsageError(f"{store.dir} already holds results; choose another --out")
    if store.foreign_entry() is not None:
        raise UsageError(f"--out {store.dir} is a folder that is not a bench run (it holds {store.foreign_entry()}); "
                         "choose a new or empty folder")
    store.ensure_writable()
    store.write_manifest({**manifest_base(store, to_jsonable(cfg), [sys.executable, "-m", "bench", *sys.argv[1:]],
                                          device),
                          "kind": "transfer",
                          "transfer": {"backbones": backbones, "inits": args.inits, "attack": args.attack,
                                       "eps": eps_list}})
    spec = SplitSpec(cfg.split.val_fraction, cfg.split.split_seed, 1, 0, cfg.split.max_train)
    train, val = split(load_embedded("mnist", "train"), spec)
    cache = CheckpointCache(cfg.cache_dir)
    models: dict[str, torch.nn.Module] = {}
    with Bars(err, enabled=not args.no_progress) as bars:
        ctx = FitContext(device=device, recipe=cfg.train, split_id=spec.split_id, cache=cache, progress=bars)
        for b in backbones:
            for seed in range(args.inits):
                model, _, _ = ctx.train_baseline(b, 10, seed, train.to(device), val.to(device))
                models[f"{b}/seed{seed}"] = model.to(device).eval()
    test = load_embedded("mnist", "test")
    n = min(len(test), cfg.eval.max_eval) if cfg.eval.max_eval else len(test)
    rows = transfer_matrix(models, test.images[:n], test.labels[:n], args.attack, eps_list, device)
    for src in dict.fromkeys(r["source"] for r in rows):
        cell: list[dict] = []
        for r in (r for r in rows if r["source"] == src):
            b, seed = r["target"].split("/seed")
            base = {"run_id": store.run_id, "method": "baseline", "backbone": b, "seed": int(seed), "fold": 0,
                    "eval_set": f"transfer:{src}", "shift": args.attack if src != "clean" else "none",
                    "severity": f"{r['eps']:g}" if src != "clean" else ""}
            values = {"accuracy": r["accuracy"]}
            if src != "clean" and r["target"] == src:
                values["gen_seconds"] = r["gen_seconds"]
            cell += tidy(values, base)
        store.write_cell(cell_key("transfer", 0, 0, src.replace("/", "-")), cell)
    path = store.write_results_csv()
    for eps in eps_list:
        out.print(matrix_table(rows, eps, args.attack))
    out.print(f"results: {path}  ({len(models)} models, {n} test images)", highlight=False)
    return 0
