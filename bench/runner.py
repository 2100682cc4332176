"""The benchmark grid: for each (fold, seed, method) fit or load the method, then score every eval set once.

Each (method, seed, fold, eval set) cell is written atomically when finished, so an interrupted run resumes
(``--resume``) without redoing finished cells. One failing method becomes an error entry, not a dead sweep.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bench.cache import CheckpointCache
from bench.config import RunConfig
from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext, EvalData
from bench.datasets.mnist import load_embedded
from bench.datasets.splits import SplitSpec, split
from bench.errors import BenchError, UsageError
from bench.evaluate import cost_rows, inference_ms_per_1k, metric_rows, tidy
from bench.methods import METHODS
from bench.methods.base import ConfidenceMethod, FitContext, Prediction
from bench.progress import Bars
from bench.store import RunStore, cell_key
from bench.utils import device_name, resolve_device, to_jsonable

PACKAGES = ("torch", "torchvision", "timm", "torchattacks", "numpy", "scikit-learn", "pandas", "rich", "pyyaml")
COST_SET = "cost"


@dataclass
class RunOutcome:
    store: RunStore
    errors: list[dict[str, Any]] = field(default_factory=list)
    cells_done: int = 0
    cells_skipped: int = 0


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_sha() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                           text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "") if r.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resolved config that determine results (not where they run or are cached)."""
    return {k: v for k, v in cfg.items() if k not in ("device", "data_dir", "cache_dir")}


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = _diff(va, vb, f"{prefix}{k}.")
            if d:
                return d
        elif va != vb:
            return f"{prefix}{k}: {va!r} in the run, {vb!r} now"
    return ""


def prepare_store(cfg: RunConfig, run_dir: Path, resume: bool, command: list[str], device: torch.device
                  ) -> RunStore:
    store = RunStore(run_dir)
    resolved = to_jsonable(cfg)
    resolved["method_options"] = {m: dict(o) for m, o in cfg.method_options}
    old = store.read_manifest()
    if store.has_results() and not resume:
        raise UsageError(f"{run_dir} already holds results; continue it with --resume or choose another --out")
    if resume and old is not None and comparable(old["config"]) != comparable(resolved):
        diff = _diff(comparable(old["config"]), comparable(resolved))
        raise UsageError(f"cannot resume {run_dir} with a different config ({diff}); "
                         "drop --resume and choose another --out")
    store.ensure_writable()
    store.write_manifest({
        "run_id": store.run_id, "config": resolved, "command": command, "versions": versions(),
        "git_sha": git_sha(), "device": str(device), "device_name": device_name(device),
        "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "resumed": bool(resume and old is not None),
        "eval_set_groups": (old or {}).get("eval_set_groups", {}),  # filled as sets are built (Runner.eval_data)
    })
    return store


class Runner:
    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool = False, retrain: bool = False,
                 console: Console | None = None, command: list[str] | None = None, progress: bool = True,
                 tensorboard: bool = False):
        if cfg.ood:  # user OOD sets: registered as ood:NAME, added to an explicit --datasets list
            from bench.datasets.user_ood import register

            names = register(cfg.ood)
            if cfg.datasets:
                cfg = dataclasses.replace(cfg, datasets=tuple(dict.fromkeys((*cfg.datasets, *names))))
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.methods = METHODS.expand(list(cfg.methods))
        self.datasets = evalsets.expand(list(cfg.datasets)) if cfg.datasets else evalsets.offline_sets()
        self.console = console or Console(stderr=True)
        self.retrain = retrain
        self.show_progress = progress
        self.tensorboard = tensorboard
        if tensorboard:
            _check_tensorboard()
        self.store = prepare_store(cfg, run_dir, resume, command or sys.argv, self.device)
        # --retrain ignores checkpoints from earlier runs, but not those this run writes (so msp and mcdropout
        # still share one freshly trained baseline).
        self.cache = CheckpointCache(cfg.cache_dir, ignore_existing=retrain)
        self.eval_ctx = EvalContext(data_dir=Path(cfg.data_dir), max_eval=cfg.eval.max_eval, device=self.device,
                                    cache_dir=Path(cfg.cache_dir))
        self._eval_data: dict[tuple[str, str], EvalData] = {}
        self._logits: dict[tuple[str, str], torch.Tensor] = {}

    def eval_data(self, name: str, method: ConfidenceMethod | None = None, method_key: str = "") -> EvalData:
        """Each eval set is built once per run; model-dependent ones (attacks) once per fitted method."""
        model_dependent = evalsets.needs_model(name)
        key = (name, method_key if model_dependent else "")
        if key not in self._eval_data:
            if model_dependent and method is None:
                raise AssertionError(f"eval set {name} needs a fitted method")
            d = evalsets.build(name, self.eval_ctx, method) if model_dependent else evalsets.build(name, self.eval_ctx)
            self._eval_data[key] = dataclasses.replace(d, images=d.images.to(self.device))
            self._record_group(d)
        return self._eval_data[key]

    def _record_group(self, d: EvalData) -> None:
        """Shift family, OOD group and severity of each eval set, in the manifest, for reports."""
        manifest = self.store.read_manifest() or {}
        groups = manifest.setdefault("eval_set_groups", {})
        entry = {"kind": d.kind, "shift": d.shift, "group": d.group, "severity": d.severity}
        if groups.get(d.name) != entry:
            groups[d.name] = entry
            self.store.write_manifest(manifest)

    def run(self) -> RunOutcome:
        out = RunOutcome(self.store)
        train_full = load_embedded("mnist", "train")
        for name in ["mnist", *self.datasets]:  # build static sets up front: a missing one fails before training
            if not evalsets.needs_model(name):
                self.eval_data(name)
        cells = [(f, s, m) for f in range(self.cfg.folds) for s in self.cfg.seeds for m in self.methods]
        with Bars(self.console, enabled=self.show_progress) as bars:
            overall = bars.add("cells", total=len(cells))
            try:
                for fold, seed, method in cells:
                    spec = SplitSpec(self.cfg.split.val_fraction, self.cfg.split.split_seed, self.cfg.folds, fold,
                                     self.cfg.split.max_train)
                    self._run_cell(out, bars, train_full, spec, method, seed)
                    bars.advance(overall)
            finally:
                self.store.write_results_csv()
                self.store.write_errors(out.errors)
        return out

    def _run_cell(self, out: RunOutcome, bars: Bars, train_full, spec: SplitSpec, method: str, seed: int) -> None:
        keys = {ds: cell_key(method, seed, spec.fold, ds) for ds in [*self.datasets, COST_SET]}
        todo = [ds for ds, k in keys.items() if not self.store.done(k)]
        out.cells_skipped += len(keys) - len(todo)
        if not todo:
            return
        try:
            m, method_key = self._fit(bars, train_full, spec, method, seed)
            # Post-hoc scorers share the baseline's network: attacks on it and its logits are computed once.
            model_key = m.baseline_key if (m.posthoc and m.baseline_key) else method_key
            self.store.record_checkpoint(method, seed, spec.fold, method_key, self.cache.path(method_key))
            # m.backbone: the network the method really used (a method's config may override the run's)
            base = {"run_id": self.store.run_id, "method": method, "backbone": m.backbone, "seed": seed,
                    "fold": spec.fold}
            id_pred: Prediction | None = None
            task = bars.add(f"eval {method} seed {seed}", total=len(todo))
            try:
                for ds in todo:
                    if ds == COST_SET:
                        self._score_cost(m, keys[ds], base)
                    else:
                        id_pred = self._score(m, model_key, ds, keys[ds], base, id_pred)
                    out.cells_done += 1
                    bars.advance(task)
            finally:
                bars.remove(task)
        except BenchError as e:
            out.errors.append({"method": method, "seed": seed, "fold": spec.fold, "error": str(e)})
            self.console.print(f"[red]error[/red] {method} seed {seed} fold {spec.fold}: {e}", soft_wrap=True,
                               highlight=False)
        finally:
            self.store.write_results_csv()

    def _score(self, m: ConfidenceMethod, model_key: str, ds: str, key: str, base: dict[str, Any],
               id_pred: Prediction | None) -> Prediction | None:
        """Predict on one eval set, write its metric rows and predictions; returns the MNIST test predictions
        (needed by OOD sets), computing them if this set needs them first."""
        data = self.eval_data(ds, m, model_key)
        pred = self._predict(m, model_key, ds, data)
        if ds == "mnist":
            id_pred = pred
        elif data.kind != "id" and id_pred is None:
            id_pred = self._predict(m, model_key, "mnist", self.eval_data("mnist"))
        rows = tidy({**metric_rows(data, pred, id_pred), **data.extra},  # extra: e.g. UAP fooling rate
                    {**base, "eval_set": ds, "shift": data.shift, "severity": data.severity})
        arrays = {"probs": pred.probs.numpy(), "confidence": pred.confidence.numpy(),
                  "labels": data.labels.cpu().numpy()}
        self.store.write_cell(key, rows, arrays)
        return id_pred

    def _score_cost(self, m: ConfidenceMethod, key: str, base: dict[str, Any]) -> None:
        imgs = self.eval_data("mnist").images[: self.cfg.eval.cost_images]
        ms = inference_ms_per_1k(m, imgs, self.cfg.eval.batch_size)
        self.store.write_cell(key, tidy(cost_rows(m, ms), {**base, "eval_set": COST_SET, "shift": "cost",
                                                            "severity": ""}))

    def _predict(self, m: ConfidenceMethod, model_key: str, name: str, data: EvalData) -> Prediction:
        if not m.posthoc:
            return m.predict(data.images, batch_size=self.cfg.eval.batch_size)
        key = (model_key, name)
        if key not in self._logits:
            self._logits[key] = m.logits(data.images, batch_size=self.cfg.eval.batch_size)
        return m.predict_from_logits(self._logits[key])

    def _fit(self, bars: Bars, train_full, spec: SplitSpec, method: str, seed: int
             ) -> tuple[ConfidenceMethod, str]:
        """The fitted method and its cache key (checkpoint cache hit, or fit and store)."""
        config = METHODS.get(method).Config(**self.cfg.options_for(method))
        writer = self._writer(method, seed, spec.fold) if self.tensorboard else None
        ctx = FitContext(device=self.device, recipe=self.cfg.train, split_id=spec.split_id, cache=self.cache,
                         progress=bars, on_epoch=_scalar_logger(writer) if writer else None)
        try:
            m = ctx.fit_method(method, self.cfg.backbone, 10, seed, *split(train_full, spec), config=config)
        finally:
            if writer is not None:
                writer.close()
        return m, m.cache_key(ctx)

    def _writer(self, method: str, seed: int, fold: int):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.store.dir / "tensorboard" / f"{method}_seed{seed}_fold{fold}"))


def _check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'") from None


def _scalar_logger(writer):
    """Per-epoch scalars, flushed at once so TensorBoard shows them live."""

    def log(label: str, epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            writer.add_scalar(f"{label}/{name}", value, epoch)
        writer.flush()

    return log


def summarize_errors(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['method']} seed {e['seed']}: {e['error']}" for e in errors)

