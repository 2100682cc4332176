"""``bench.score``: every metric bench reports, from saved outputs alone (no model): accuracy, calibration and
misclassification detection on a labelled set, OOD detection against each unlabelled set. The same functions as a
run's rows (bench/run/rows.py), so scoring the predictions a run saved gives that run's metrics.

Outputs are logits or probabilities (N, K) as numpy or torch arrays; the confidence is the maximum softmax
probability unless ``confidence`` gives a method's own values (higher = more trustworthy; then every OOD set needs
its own too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from bench.errors import UsageError
from bench.methods.core.base import Prediction
from bench.run.rows import id_rows, ood_rows, tidy
from bench.run.store import ROW_FIELDS

KINDS = ("logits", "probs")


@dataclass(frozen=True)
class Scored:
    """One set's validated arrays: probabilities (N, K), confidence (N,), labels (N,) (-1 for OOD)."""

    name: str
    probs: np.ndarray
    confidence: np.ndarray
    labels: np.ndarray
    external: bool  # confidence given, not the MCP


def _array(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.is_meta:  # shapes without values: .cpu() would raise deep inside torch
            raise UsageError(f"{what} is a tensor on the meta device (a shape without values); pass the real outputs")
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except Exception:  # anything that is not array-like
        raise UsageError(f"{what} is a {type(x).__name__}, not an array; pass numpy or torch arrays") from None
    if np.iscomplexobj(a):  # torch and numpy would keep the real part with at most a warning
        raise UsageError(f"{what} holds complex numbers ({a.dtype}); pass real-valued arrays")
    return a


#: the largest array an .npz given to bench score may declare (bytes); BENCH_MAX_ARRAY_GB overrides it
MAX_ARRAY_BYTES = 4 * 2**30


def check_npz_sizes(path: Any, z: Any) -> None:
    """Refuse, before reading, an .npz member whose header declares more than ``MAX_ARRAY_BYTES``
    (``BENCH_MAX_ARRAY_GB``): numpy would try to allocate it."""
    import os
    import zipfile

    from bench.datasets.image_files import declared_arrays

    text = os.environ.get("BENCH_MAX_ARRAY_GB", str(MAX_ARRAY_BYTES / 2**30))
    try:
        limit = float(text) * 2**30
    except ValueError:
        limit = math.nan
    if not limit > 0 or math.isinf(limit):  # nan (not a number) fails "> 0"
        raise UsageError(f"BENCH_MAX_ARRAY_GB={text!r} must be a positive number of GiB, e.g. 8")
    try:
        for name, (shape, dtype) in declared_arrays(path).items():
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > limit:
                raise UsageError(f"{path}: array {name} declares shape {shape} of {dtype} "
                                 f"({nbytes / 2**30:,.1f} GiB), more than bench reads ({limit / 2**30:g} GiB; "
                                 "BENCH_MAX_ARRAY_GB raises it)")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"{path} is not a readable .npz ({type(e).__name__}); save it with numpy.savez") from None


def probabilities(outputs: Any, kind: str, what: str) -> np.ndarray:
    """(N, K) float32 probabilities from logits (softmax, as a run computes it) or validated probabilities."""
    if kind not in KINDS:
        raise UsageError(f"kind={kind!r} is not valid; use 'logits' or 'probs'")
    a = _array(outputs, what)
    if a.ndim != 2 or a.shape[1] < 2 or not np.issubdtype(a.dtype, np.number):
        raise UsageError(f"{what} has shape {a.shape} ({a.dtype}); it must be numbers of shape (N, K), K >= 2")
    if len(a) == 0:
        raise UsageError(f"{what} has no rows; give the outputs of at least one image")
    if not np.isfinite(a).all():
        raise UsageError(f"{what} holds nan or inf; every output must be finite")
    t = torch.from_numpy(np.ascontiguousarray(a)).float()
    if not torch.isfinite(t).all():  # float64 values beyond float32's range (~3.4e38) become inf
        raise UsageError(f"{what} holds values beyond float32's range (|x| > 3.4e38); bench computes in float32")
    if kind == "logits":
        return t.softmax(1).numpy()
    if (t < 0).any() or (t > 1).any() or not torch.allclose(t.sum(1), torch.ones(len(t)), atol=1e-3):
        raise UsageError(f"{what} are not probabilities (values in [0, 1], rows summing to 1); if they are logits, "
                         "pass kind='logits' (bench score: store them as 'logits')")
    return t.numpy()


def _confidence(conf: Any, n: int, what: str) -> np.ndarray:
    c = _array(conf, what)
    if c.shape != (n,) or not np.issubdtype(c.dtype, np.number):
        raise UsageError(f"{what} has shape {c.shape}; it must be one number per sample, shape ({n},)")
    if not np.isfinite(c).all():
        raise UsageError(f"{what} holds nan or inf; every confidence must be finite")
    return c.astype(np.float32)


def labelled(name: str, outputs: Any, labels: Any, kind: str, confidence: Any = None) -> Scored:
    probs = probabilities(outputs, kind, f"{name} {kind}")
    n, k = probs.shape
    y = _array(labels, f"{name} labels")
    if y.shape != (n,):
        raise UsageError(f"{name} labels have shape {y.shape} but there are {n} outputs; give one label per row")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all() or (y != np.round(y)).any():
            raise UsageError(f"{name} labels must be integer class indices, got {y.dtype}")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= k):
        bad = int(y.min() if y.min() < 0 else y.max())
        raise UsageError(f"{name} labels must lie in [0, {k}) for {k} classes, found {bad}")
    conf = probs.max(1) if confidence is None else _confidence(confidence, n, f"{name} confidence")
    return Scored(name, probs, conf, y, confidence is not None)


def unlabelled(name: str, outputs: Any, kind: str, k: int, confidence: Any = None) -> Scored:
    probs = probabilities(outputs, kind, f"OOD set {name} {kind}")
    if probs.shape[1] != k:
        raise UsageError(f"OOD set {name} has {probs.shape[1]} classes, the labelled set {k}; give outputs of the "
                         "same model")
    n = len(probs)
    conf = probs.max(1) if confidence is None else _confidence(confidence, n, f"OOD set {name} confidence")
    return Scored(name, probs, conf, np.full(n, -1, dtype=np.int64), confidence is not None)


def _ood_entry(name: str, value: Any) -> tuple[Any, Any]:
    """An OOD value is outputs, (outputs, confidence), or a mapping with 'logits'/'probs'/'outputs' and
    'confidence'."""
    if isinstance(value, Mapping):
        outs = next((value[k] for k in ("outputs", "logits", "probs") if k in value), None)
        if outs is None:
            raise UsageError(f"OOD set {name} has no 'logits', 'probs' or 'outputs'")
        return outs, value.get("confidence")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise UsageError(f"OOD set {name}: a tuple must be (outputs, confidence)")
        return value
    return value, None


def rows_for(sets: list[Scored], *, method: str, model: str, run_id: str, seed: int = 0,
             calibration: Scored | None = None) -> list[dict[str, Any]]:
    """The tidy rows: the first set is the labelled one, the rest are OOD sets scored against it. With
    ``calibration`` (labelled outputs of other images of the same model), the labelled set also gets the guarantee
    rows (bench/conformal.py) calibrated on it."""
    from bench import conformal

    first = sets[0]
    id_pred = Prediction(torch.from_numpy(first.probs), torch.from_numpy(first.confidence))
    base = {"run_id": run_id, "method": method, "backbone": model, "seed": seed, "fold": 0}
    values = id_rows(id_pred, torch.from_numpy(first.labels))
    if calibration is not None:
        values.update(conformal.guarantee_metrics(calibration.probs, calibration.labels, calibration.confidence,
                                                  first.probs, first.labels, first.confidence))
    out = tidy(values, {**base, "eval_set": first.name, "shift": "none", "severity": ""})
    for s in sets[1:]:
        pred = Prediction(torch.from_numpy(s.probs), torch.from_numpy(s.confidence))
        out += tidy(ood_rows(id_pred, pred), {**base, "eval_set": s.name, "shift": "ood", "severity": ""})
    return out


def calibration_set(value: Any, kind: str, k: int) -> Scored:
    """The calibration outputs: (outputs, labels), (outputs, labels, confidence) or a mapping with
    'logits'/'probs'/'outputs', 'labels' and optionally 'confidence'."""
    if isinstance(value, Mapping):
        outs = next((value[key] for key in ("outputs", "logits", "probs") if key in value), None)
        if outs is None or "labels" not in value:
            raise UsageError("calibration needs 'logits' (or 'probs' / 'outputs') and 'labels'")
        outs, labels, conf = outs, value["labels"], value.get("confidence")
    elif isinstance(value, tuple) and len(value) in (2, 3):
        outs, labels, conf = (*value, None)[:3]
    else:
        raise UsageError("calibration must be (outputs, labels), (outputs, labels, confidence) or a mapping with "
                         "'logits' and 'labels'")
    s = labelled("calibration", outs, labels, kind, conf)
    if s.probs.shape[1] != k:
        raise UsageError(f"calibration has {s.probs.shape[1]} classes, the labelled set {k}; give outputs of the same "
                         "model")
    return s


def check_sets(sets: list[Scored]) -> None:
    ext = [s.external for s in sets]
    if any(ext) and not all(ext):
        which = next(s.name for s in sets if not s.external)
        raise UsageError(f"a confidence was given for some sets but not for {which}; give it for every set (or none, "
                         "to score the maximum softmax probability)")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise UsageError(f"set names {names} repeat; give each set its own name")


def score(outputs: Any, labels: Any, *, ood: Mapping[str, Any] | None = None, kind: str = "logits",
          confidence: Any = None, method: str | None = None, model: str = "outputs", name: str = "id",
          run_id: str = "score", calibration: Any = None) -> pd.DataFrame:
    """Every metric from saved outputs: ``outputs`` (N, K) logits or probabilities (``kind``) of a labelled set with
    integer ``labels`` in [0, K); ``ood``: name -> outputs of an unlabelled set (or (outputs, confidence));
    ``confidence``: an external method's own scores (higher = more trustworthy) instead of the max softmax.
    ``calibration``: (outputs, labels[, confidence]) of held-out labelled images (never the scored ones), for the
    split-conformal and SGR rows of the labelled set (docs/guarantees.md). Returns tidy rows (the columns of
    results.csv); the method column is ``method`` (default msp, or ``confidence`` when given)."""
    if ood is not None and (not isinstance(ood, Mapping) or not all(isinstance(k, str) for k in ood)):
        raise UsageError(f"ood must be a dict of set name -> outputs, e.g. ood={{'noise': outputs}}, got a "
                         f"{type(ood).__name__}")
    sets = [labelled(name, outputs, labels, kind, confidence)]
    for ood_name, value in (ood or {}).items():
        outs, conf = _ood_entry(ood_name, value)
        sets.append(unlabelled(str(ood_name), outs, kind, sets[0].probs.shape[1], conf))
    cal = None if calibration is None else calibration_set(calibration, kind, sets[0].probs.shape[1])
    check_sets(sets + ([cal] if cal is not None else []))
    label = method or ("confidence" if confidence is not None else "msp")
    return pd.DataFrame(rows_for(sets, method=label, model=model, run_id=run_id, calibration=cal),
                        columns=list(ROW_FIELDS))
