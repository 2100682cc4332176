"""From predictions to tidy metric rows (one value per row), and the cost rows of a fitted method."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from bench import metrics
from bench.datasets.evalsets import EvalData
from bench.methods.core.base import ConfidenceMethod, Prediction
from bench.run.store import ROW_FIELDS
from bench.utils import sync


def id_rows(pred: Prediction, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, calibration and misclassification-detection metrics on a labelled set."""
    probs, conf, y = pred.probs.numpy(), pred.confidence.numpy(), labels.cpu().numpy()
    out = metrics.classification_metrics(probs, y, conf)
    out["mean_confidence"] = float(conf.mean())
    # counts, so that a report can say how many errors its misclassification metrics rest on (bench/report/counts.py)
    out["n_images"] = float(len(y))
    out["n_errors"] = float(np.sum(probs.argmax(axis=1) != y))
    return out


def ood_rows(id_pred: Prediction, ood_pred: Prediction) -> dict[str, float]:
    """OOD detection with the in-distribution test set as positives."""
    m = metrics.ood_metrics(id_pred.confidence.numpy(), ood_pred.confidence.numpy())
    out = {f"ood_{k}": v for k, v in m.items()}
    out["mean_confidence"] = float(ood_pred.confidence.mean())
    out["n_images"] = float(len(ood_pred.confidence))
    return out


def metric_rows(data: EvalData, pred: Prediction, id_pred: Prediction | None) -> dict[str, float]:
    if data.kind == "id":
        return id_rows(pred, data.labels)
    assert id_pred is not None
    return ood_rows(id_pred, pred)


def inference_ms_per_1k(method: ConfidenceMethod, images: torch.Tensor, batch_size: int) -> float:
    """Wall time of ``predict`` per 1,000 images, after one warm-up batch (CUDA synchronised)."""
    method.predict(images[: min(len(images), batch_size)], batch_size=batch_size)
    sync(method.device)
    t0 = time.perf_counter()
    method.predict(images, batch_size=batch_size)
    sync(method.device)
    return 1000.0 * (time.perf_counter() - t0) * 1000.0 / max(len(images), 1)


def cost_rows(method: ConfidenceMethod, infer_ms: float) -> dict[str, float]:
    log = method.train_log
    params = sum(p.numel() for p in method.classifier.parameters())
    out: dict[str, float] = {"params": float(params), "infer_ms_per_1k": infer_ms,
                             "forward_passes": float(method.forward_passes)}
    if log is not None and log.epoch_seconds:
        secs = log.epoch_seconds
        out["first_epoch_sec"] = secs[0]
        # the first epoch carries warm-up (allocator, cudnn autotune); it is reported apart
        out["sec_per_epoch"] = float(np.mean(secs[1:] if len(secs) > 1 else secs))
        out["train_sec_total"] = log.train_seconds
        out["epochs"] = float(len(secs))
        out["best_epoch"] = float(log.best_epoch)
        out[log.peak_memory_metric] = log.peak_memory_mb
    return out


#: the fields that name a row's cell: every field of ``ROW_FIELDS`` but the metric and its value
CELL_FIELDS = ROW_FIELDS[:-2]


def tidy(values: dict[str, float], base: dict[str, Any]) -> list[dict[str, Any]]:
    """The one constructor of tidy rows (one value per row, fields ``ROW_FIELDS`` of bench/run/store.py), used by
    every writer: runs and ``bench.evaluate``, ``bench score``, ``bench rescore``, ``bench transfer`` and ``bench
    uap-sweep``. ``base`` names the cell with exactly ``CELL_FIELDS``; seed and fold become ints, the rest text."""
    if set(base) != set(CELL_FIELDS):
        missing, extra = sorted(set(CELL_FIELDS) - set(base)), sorted(set(base) - set(CELL_FIELDS))
        raise ValueError(f"a row's cell is named by {CELL_FIELDS}: missing {missing}, unknown {extra}")
    cell = {f: int(base[f]) if f in ("seed", "fold") else str(base[f]) for f in CELL_FIELDS}
    return [{**cell, "metric": str(k), "value": float(v)} for k, v in values.items()]
