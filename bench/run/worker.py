"""The unit worker: fits (or loads) each method of a unit and scores its eval sets, writing one cell file per
(method, seed, fold, eval set) and a record per fitted checkpoint, failure and eval set (bench/run/store.py).

The same ``UnitWorker.run_unit`` runs in the driver's process, in ``--jobs`` worker processes and on Ray workers
(bench/run/executors.py). One failing method becomes an error entry, not a dead sweep.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from bench import conformal, faults
from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext, EvalData
from bench.datasets.source import DataSource, run_sets
from bench.datasets.splits import SplitSpec, split
from bench.errors import BenchError, DiskFullError
from bench.methods import METHODS
from bench.methods.core.base import ConfidenceMethod, FitContext, Prediction, Training
from bench.run.grid import CAL_SET, COST_SET, Unit, UnitResult, eval_names, fitted_ok
from bench.run.progress import Bars
from bench.run.rows import cost_rows, inference_ms_per_1k, metric_rows, tidy
from bench.run.store import RunStore, cell_key


class UnitWorker:
    """Runs units of one run: fits (or loads) each method and scores its eval sets, writing cells. Keeps the
    static eval sets between units; logits and model-dependent sets (attacks) live for one unit."""

    def __init__(self, cfg: RunConfig, run_dir: Path, cache: CheckpointCache, device: torch.device,
                 datasets: list[str], *, source: DataSource, bars: Bars | None = None, tensorboard: bool = False,
                 on_cell: Any = None):
        self.cfg = cfg
        self.device = device
        self.datasets = datasets
        self.store = RunStore(run_dir)
        self.cache = cache
        self.bars = bars if bars is not None else Bars(Console(stderr=True), enabled=False)
        self.tensorboard = tensorboard
        self.on_cell = on_cell  # called after each finished cell (the in-process progress bar)
        self.source = source  # the in-distribution data; id_set is its test part's eval set
        self.id_set = source.name
        self.sets = run_sets(source, cfg.ood)  # this run's eval sets (its --data test part, its --ood sets)
        self.eval_ctx = EvalContext(data_dir=Path(cfg.data_dir), max_eval=cfg.eval.max_eval,
                                    max_attack=cfg.eval.max_attack, device=device, cache_dir=Path(cfg.cache_dir),
                                    data=source, ood_resize=cfg.ood_resize, sets=self.sets)
        self._eval_data: dict[tuple[str, str], EvalData] = {}
        self._logits: dict[tuple[str, str], torch.Tensor] = {}
        self._features: dict[tuple[str, str], torch.Tensor] = {}  # penultimate features, when a scorer reads them
        self._unit_features = False  # whether the current unit has a feature scorer
        self._groups: dict[str, dict[str, Any]] = {}
        self._train_full = None

    def eval_data(self, name: str, method: ConfidenceMethod | None = None, method_key: str = "") -> EvalData:
        """Each eval set is built once per process; model-dependent ones (attacks) once per fitted method."""
        model_dependent = evalsets.needs_model(name, self.sets)
        key = (name, method_key if model_dependent else "")
        if key not in self._eval_data:
            if model_dependent and method is None:
                raise AssertionError(f"eval set {name} needs a fitted method")
            d = evalsets.build(name, self.eval_ctx, method) if model_dependent else evalsets.build(name, self.eval_ctx)
            self._eval_data[key] = dataclasses.replace(d, images=d.images.to(self.device))
            # shift family, OOD group and severity of each eval set, for the manifest (reports)
            self._groups[d.name] = {"kind": d.kind, "shift": d.shift, "group": d.group, "severity": d.severity}
            self.store.record_eval_set(d.name, self._groups[d.name])
        return self._eval_data[key]

    def build_static(self) -> dict[str, dict[str, Any]]:
        """Build the sets that need no model up front (a missing one fails before any training)."""
        for name in [self.id_set, *self.datasets]:
            if not evalsets.needs_model(name, self.sets):
                self.eval_data(name)
        return dict(self._groups)

    def run_unit(self, unit: Unit) -> UnitResult:
        out = UnitResult(unit)
        if self._train_full is None:
            self._train_full = self.source.part("train")
        spec = SplitSpec(self.cfg.split.val_fraction, self.cfg.split.split_seed, self.cfg.folds, unit.fold,
                         self.cfg.split.max_train, data=self.source.split_name)
        marker = self.store.dir / ".running" / f"{unit.marker}.{os.getpid()}"
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        started = time.time()
        # with a feature scorer in the unit, the one shared pass per eval set yields features and logits together
        self._unit_features = any(METHODS.get(m).uses_features for m in unit.methods)
        try:
            for method in unit.methods:  # networks take the shape of the images they are fitted on
                self._run_method(out, spec, method, unit.seed)
        finally:  # what belongs to this unit's models is not needed by the next unit
            self._logits.clear()
            self._features.clear()
            self._eval_data = {k: v for k, v in self._eval_data.items() if not k[1]}
            out.groups = dict(self._groups)
            marker.unlink(missing_ok=True)
            self.store.record_unit_time(unit.marker, {
                "unit": unit.name, "methods": list(unit.methods), "seed": unit.seed, "fold": unit.fold,
                "started": started, "finished": time.time(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "cells_done": out.cells_done})
        return out

    def _run_method(self, out: UnitResult, spec: SplitSpec, method: str, seed: int) -> None:
        keys = {ds: self.cell_key(method, seed, spec.fold, ds)
                for ds in eval_names(self.datasets, self.cfg.eval.conformal)}
        todo = [ds for ds, k in keys.items() if not self.store.done(k)]  # a retried unit keeps finished cells
        if not todo and (not self.cfg.executor.refit or fitted_ok(self.store, self.cache, method, seed, spec.fold)):
            self.store.clear_failure(method, seed, spec.fold)
            return
        try:
            m, method_key = self._fit(spec, method, seed)
            m.eval_compile = self.cfg.eval.compile
            # Post-hoc scorers share the baseline's network: attacks on it and its logits are computed once.
            model_key = m.baseline_key if (m.posthoc and m.baseline_key) else method_key
            entry = (method, seed, spec.fold, method_key, str(self.cache.path(method_key).resolve()))
            out.checkpoints.append(entry)
            self.store.record_fitted(*entry)  # before any cell: a cell on disk always has its checkpoint recorded
            # m.backbone: the network the method really used (a method's config may override the run's)
            base = {"run_id": self.store.run_id, "method": self.row_method(method), "backbone": m.backbone,
                    "seed": seed, "fold": spec.fold}
            id_pred: Prediction | None = None
            cal: dict[str, np.ndarray] | None = None  # the validation split's outputs (eval.conformal)
            task = self.bars.add(f"eval {method} seed {seed}", total=len(todo))
            try:
                for ds in todo:
                    faults.hit("eval")
                    if ds == COST_SET:
                        self._score_cost(m, keys[ds], base)
                    elif ds == CAL_SET:
                        cal = self._calibration(m, model_key, spec, keys[ds])
                    else:
                        if self.cfg.eval.conformal and cal is None:  # a resumed run: its calibration cell is done
                            cal = self.store.read_arrays(keys[CAL_SET])
                        id_pred = self._score(m, model_key, ds, keys[ds], base, id_pred, cal)
                    out.cells_done += 1
                    self.bars.advance(task)
                    if self.on_cell is not None:
                        self.on_cell()
            finally:
                self.bars.remove(task)
            self.store.clear_failure(method, seed, spec.fold)
        except DiskFullError:  # not this method's failure: every later cell would fail the same way
            raise
        except BenchError as e:
            out.errors.append({"method": method, "seed": seed, "fold": spec.fold, "error": str(e)})
            self.store.record_failure(out.errors[-1])
        except Exception as e:  # a crash in one method must not take down the other cells of the grid
            out.errors.append({"method": method, "seed": seed, "fold": spec.fold,
                               "error": f"{type(e).__name__}: {e}".splitlines()[0],
                               "traceback": traceback.format_exc()})
            self.store.record_failure(out.errors[-1])

    def row_method(self, method: str) -> str:
        """The method column of the rows and cell files of ``method`` (a worker of user models adds the model's
        name, bench/own/evaluate.py)."""
        return method

    def cell_key(self, method: str, seed: int, fold: int, eval_set: str) -> str:
        """The cell's file name."""
        return cell_key(self.row_method(method), seed, fold, eval_set)

    def _calibration(self, m: ConfidenceMethod, model_key: str, spec: SplitSpec, key: str) -> dict[str, np.ndarray]:
        """The method's outputs on its own validation split (never on an image it is scored on), stored as a cell of
        no rows: the calibration set of the guarantee rows (bench/conformal.py)."""
        _, val = split(self._train_full, spec)
        data = EvalData(CAL_SET, val.images.to(self.device), val.labels.to(self.device), "id")
        pred = self._predict(m, model_key, CAL_SET, data)
        arrays = {"probs": pred.probs.numpy(), "confidence": pred.confidence.numpy(), "labels": val.labels.numpy(),
                  **self._outputs(m, model_key, CAL_SET, data, pred)}
        self.store.write_cell(key, [], arrays)
        return arrays

    def _score(self, m: ConfidenceMethod, model_key: str, ds: str, key: str, base: dict[str, Any],
               id_pred: Prediction | None, cal: dict[str, np.ndarray] | None = None) -> Prediction | None:
        """Predict on one eval set, write its metric rows and predictions; returns the MNIST test predictions
        (needed by OOD sets), computing them if this set needs them first. With ``cal`` (the calibration cell's
        arrays), a labelled set also gets the guarantee rows."""
        data = self.eval_data(ds, m, model_key)
        pred = self._predict(m, model_key, ds, data)
        if ds == self.id_set:
            id_pred = pred
        elif data.kind != "id" and id_pred is None:
            id_pred = self._predict(m, model_key, self.id_set, self.eval_data(self.id_set))
        values = metric_rows(data, pred, id_pred)
        if cal is not None and data.kind == "id":
            values.update(conformal.guarantee_metrics(cal["probs"], cal["labels"], cal["confidence"],
                                                      pred.probs.numpy(), data.labels.cpu().numpy(),
                                                      pred.confidence.numpy()))
        rows = tidy({**values, **data.extra},  # extra: e.g. UAP fooling rate
                    {**base, "eval_set": ds, "shift": data.shift, "severity": data.severity})
        arrays = {"probs": pred.probs.numpy(), "confidence": pred.confidence.numpy(),
                  "labels": data.labels.cpu().numpy(), **self._outputs(m, model_key, ds, data, pred)}
        self.store.write_cell(key, rows, arrays)
        return id_pred

    def _outputs(self, m: ConfidenceMethod, model_key: str, ds: str, data: EvalData, pred: Prediction
                 ) -> dict[str, Any]:
        """The classifier's logits of a cell (float32, always) and its penultimate features (``save_features``), so
        that post-hoc scores can be added later without inference (``bench rescore``). Post-hoc scorers and methods
        whose ``predict`` returns logits cost nothing; the others (own inference: MC-dropout, ODIN, ConfidNet, trust
        score) reuse the unit's shared baseline pass when their network is the baseline, else make one extra pass."""
        key = (model_key, ds)
        if m.posthoc:  # the shared pass of _predict (with features when save_features is on)
            feats = self._features.get(key) if self.cfg.save_features else None
            return _float32(logits=self._logits[key], features=feats)
        logits, feats = pred.logits, None
        shared = (m.baseline_key, ds)
        if m.training is Training.SHARED_BASELINE and shared in self._logits:  # its network is the baseline
            logits = self._logits[shared] if logits is None else logits
            feats = self._features.get(shared) if self.cfg.save_features else None
        net = m.model  # the network predict runs (SWAG's classifier is only its mean network)
        if (self.cfg.save_features and feats is None and hasattr(net, "forward_features")
                and hasattr(net, "forward_head")):
            feats, own = m.features(data.images, batch_size=self.cfg.eval.batch_size)
            logits = own if logits is None else logits
        if logits is None:
            logits = m.logits(data.images, batch_size=self.cfg.eval.batch_size)
        return _float32(logits=logits, features=feats)

    def _score_cost(self, m: ConfidenceMethod, key: str, base: dict[str, Any]) -> None:
        imgs = self.eval_data(self.id_set).images[: self.cfg.eval.cost_images]
        # a method of T passes is timed on 1/T of the images (at least 128): the figure is per 1k images either way,
        # and T full passes over 1,000 images of a model without a stochastic tail took minutes for one number
        imgs = imgs[: max(128, len(imgs) // max(1, m.forward_passes))]
        ms = inference_ms_per_1k(m, imgs, self.cfg.eval.batch_size)
        self.store.write_cell(key, tidy(cost_rows(m, ms), {**base, "eval_set": COST_SET, "shift": "cost",
                                                            "severity": ""}))

    def _predict(self, m: ConfidenceMethod, model_key: str, name: str, data: EvalData) -> Prediction:
        if not m.posthoc:
            return m.predict(data.images, batch_size=self.cfg.eval.batch_size)
        key = (model_key, name)
        if key not in self._logits:
            if self._unit_features or self.cfg.save_features:
                self._features[key], self._logits[key] = m.features(data.images, batch_size=self.cfg.eval.batch_size)
            else:
                self._logits[key] = m.logits(data.images, batch_size=self.cfg.eval.batch_size)
        if m.uses_features:
            return m.predict_from_features(self._features[key], self._logits[key])
        return m.predict_from_logits(self._logits[key])

    def _fit(self, spec: SplitSpec, method: str, seed: int) -> tuple[ConfidenceMethod, str]:
        """The fitted method and its cache key (checkpoint cache hit, or fit and store)."""
        config = METHODS.get(method).Config(**self.cfg.options_for(method))
        writer = self._writer(method, seed, spec.fold) if self.tensorboard else None
        loggers = [f for f in (_scalar_logger(writer) if writer else None, _epoch_lines(self.bars.console)) if f]
        ctx = FitContext(device=self.device, recipe=self.cfg.train, split_id=spec.split_id, cache=self.cache,
                         progress=self.bars, data_dir=Path(self.cfg.data_dir),
                         on_epoch=_both(loggers) if loggers else None)
        try:
            m = ctx.fit_method(method, self.cfg.backbone, self.source.num_classes, seed,
                               *split(self._train_full, spec), config=config)
        finally:
            if writer is not None:
                writer.close()
        return m, m.cache_key(ctx)

    def _writer(self, method: str, seed: int, fold: int):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.store.dir / "tensorboard" / f"{method}_seed{seed}_fold{fold}"))


def _float32(**arrays: torch.Tensor | None) -> dict[str, Any]:
    # detach: ODIN's passes run with autograd on (needs_grad)
    return {k: v.detach().float().cpu().numpy() for k, v in arrays.items() if v is not None}


def _scalar_logger(writer):
    """Per-epoch scalars, flushed at once so TensorBoard shows them live."""

    def log(label: str, epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            writer.add_scalar(f"{label}/{name}", value, epoch)
        writer.flush()

    return log


def _epoch_lines(console: Console):
    """Where progress bars cannot draw (stderr is a log file or a pipe, as in CI), one line per training epoch, so
    that a long training is not minutes of silence; None on a terminal (the bars show it there)."""
    if console.is_terminal:
        return None

    def log(label: str, epoch: int, scalars: dict[str, float]) -> None:
        val = "".join(f", {k} {v:.4g}" for k, v in scalars.items() if k.startswith("val_"))
        console.print(f"train {label} epoch {epoch}: loss {scalars['loss']:.4f}{val} "
                      f"({scalars.get('epoch_seconds', float('nan')):.1f} s)", highlight=False, soft_wrap=True,
                      markup=False)

    return log


def _both(loggers: list):
    def log(label: str, epoch: int, scalars: dict[str, float]) -> None:
        for f in loggers:
            f(label, epoch, scalars)

    return log

