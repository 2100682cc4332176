"""``bench score FILE.npz [--ood NAME=FILE.npz ...] [--out DIR]``: every metric from saved outputs, no model
(bench/own/score.py). An npz holds ``logits`` or ``probs`` (N, K), ``labels`` (N,) (not needed in OOD files) and
optionally ``confidence`` (N,), a method's own scores. The predictions a run saves (``<run>/predictions/*.npz``)
are such files; they hold both probs (the method's, scored by default) and the classifier's logits (``--use
logits``). ``--out`` also writes a run directory that ``bench report`` reads; nothing is written unless every
file is valid."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="every metric from saved outputs (npz of logits or probs, labels), no model")
    p.add_argument("file", type=Path, help="npz with logits or probs (N, K), labels (N,), optional confidence (N,)")
    p.add_argument("--ood", action="append", default=[], metavar="NAME=FILE.npz",
                   help="an OOD set's outputs (no labels needed), scored against FILE (repeatable)")
    p.add_argument("--calibration", type=Path, metavar="FILE.npz",
                   help="held-out labelled outputs of the same model (as FILE, never the scored images): adds "
                   "split-conformal coverage / set size and SGR rows to the labelled set (docs/guarantees.md)")
    p.add_argument("--name", default="id", help="the labelled set's name in the rows (default id)")
    p.add_argument("--method", help="method name in the rows (default msp, or confidence when the files have one)")
    p.add_argument("--model-name", default="outputs", help="backbone column of the rows (default outputs)")
    p.add_argument("--out", type=Path, help="also write a run directory (results.csv, cells, predictions, manifest)")
    p.add_argument("--use", choices=("auto", "logits", "probs"), default="auto",
                   help="which outputs to score when a file has both (a run's predictions): auto = probs (the "
                        "method's), logits = the classifier's logits (softmax)")
    p.set_defaults(handler=run_score)


def read_npz(path: Path, labelled: bool, use: str = "auto") -> dict[str, Any]:
    """The arrays of one file: ``outputs`` and ``kind`` (``use``: logits or probs; auto = probs when the file has
    both, as a run's predictions do, else whichever it has), ``labels``, ``confidence``."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    from bench.own.score import check_npz_sizes

    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"{path} is not a readable .npz ({type(e).__name__}); save it with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # np.load gives a bare array for a .npy file, whatever its name
        raise UsageError(f"{path} is a single .npy array, not an .npz archive; save it with numpy.savez(FILE, "
                         "logits=..., labels=...)")
    with z:
        check_npz_sizes(path, z)  # declared sizes before any array is read: a header can claim 373 GiB
        try:
            arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise UsageError(f"{path} is not a readable .npz ({type(e).__name__}); save it with numpy.savez") \
                from None
    if use == "auto":  # a run's file holds both: its probs are the method's (e.g. temperature-scaled), so they win
        kind = "probs" if "probs" in arrays else "logits" if "logits" in arrays else ""
    else:
        kind = use if use in arrays else ""
        if not kind:
            raise UsageError(f"{path} has no {use!r} array (it has {', '.join(arrays) or 'none'}); drop --use "
                             f"{use}")
    if not kind:
        raise UsageError(f"{path} has no 'logits' or 'probs' array (it has {', '.join(arrays) or 'none'}); save the "
                         "model's outputs under one of those names")
    if labelled and "labels" not in arrays:
        raise UsageError(f"{path} has no 'labels' array; the labelled set needs its true classes (OOD sets go in "
                         "--ood NAME=FILE.npz)")
    return {"outputs": arrays[kind], "kind": kind, "labels": arrays.get("labels"),
            "confidence": arrays.get("confidence")}


def _ood_args(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--ood {item!r} is malformed; use --ood NAME=FILE.npz")
        out.append((name, Path(path)))
    return out


def run_score(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.own.score import calibration_set, check_sets, labelled, rows_for, unlabelled
    from bench.report.summary import summary_tables
    from bench.run.store import check_name, check_new_out

    if args.out is not None:  # before reading anything: a user's folder is never written over
        check_new_out(args.out)
    if args.method is not None:
        check_name(args.method, "--method")
    check_name(args.model_name, "--model-name")
    oods = _ood_args(args.ood)
    main = read_npz(args.file, labelled=True, use=args.use)
    sets = [labelled(args.name, main["outputs"], main["labels"], main["kind"], main["confidence"])]
    for name, path in oods:
        o = read_npz(path, labelled=False, use=args.use)
        if o["kind"] != main["kind"]:
            raise UsageError(f"{path} holds {o['kind']} but {args.file} holds {main['kind']}; give the same kind")
        sets.append(unlabelled(name, o["outputs"], o["kind"], sets[0].probs.shape[1], o["confidence"]))
    cal = None
    if args.calibration is not None:
        c = read_npz(args.calibration, labelled=True, use=args.use)
        if c["kind"] != main["kind"]:
            raise UsageError(f"{args.calibration} holds {c['kind']} but {args.file} holds {main['kind']}; give the "
                             "same kind")
        cal = calibration_set((c["outputs"], c["labels"], c["confidence"]), c["kind"], sets[0].probs.shape[1])
    check_sets(sets + ([cal] if cal is not None else []))
    method = args.method or ("confidence" if sets[0].external else "msp")
    run_id = args.out.name if args.out is not None else "score"
    rows = rows_for(sets, method=method, model=args.model_name, run_id=run_id, calibration=cal)
    groups = {s.name: {"kind": "id" if i == 0 else "ood", "shift": "none" if i == 0 else "ood", "group": "",
                       "severity": ""} for i, s in enumerate(sets)}
    if args.out is not None:
        write_run(args.out, sets, rows, method, groups, [str(args.file), *args.ood,
                  *([f"calibration={args.calibration}"] if cal is not None else [])], cal)
    for table in summary_tables(rows, groups, id_set=args.name):
        out.print(table)
    if args.out is not None:
        out.print(f"results: {args.out / 'results.csv'}", highlight=False, soft_wrap=True)
    return 0


def write_run(run_dir: Path, sets: list, rows: list[dict[str, Any]], method: str, groups: dict[str, Any],
              inputs: list[str], calibration: Any = None) -> None:
    """A run directory of the scored files: one cell per set (rows + the arrays as a run saves them), and the
    calibration outputs as a cell of no rows (as ``bench run --set eval.conformal=true`` keeps them)."""
    import sys

    from bench.run.provenance import manifest_base
    from bench.run.store import RunStore, cell_key, check_new_out

    check_new_out(run_dir)
    store = RunStore(run_dir)
    store.ensure_writable()
    names = [s.name for s in sets]
    config = {"profile": "score", "methods": [method], "datasets": names, "seeds": [0], "folds": 1}
    store.write_manifest({
        **manifest_base(store, config, [sys.executable, "-m", "bench", *sys.argv[1:]], "none"),
        "device_name": "none (saved outputs)",
        "eval_set_groups": groups, "scored_files": inputs, "cells": [[method, 0, 0, n] for n in names],
    })
    for s in sets:
        store.write_cell(cell_key(method, 0, 0, s.name), [r for r in rows if r["eval_set"] == s.name],
                         {"probs": s.probs, "confidence": s.confidence, "labels": s.labels})
    if calibration is not None:
        c = calibration
        store.write_cell(cell_key(method, 0, 0, "calibration"), [],
                         {"probs": c.probs, "confidence": c.confidence, "labels": c.labels})
    store.write_results_csv()
