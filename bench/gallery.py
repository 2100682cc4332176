"""Pictures of what the models see: image grids of a finished run (``python -m bench gallery RUN --out DIR``).

Each picture is written as PNG and PDF, titled and labelled so that it reads without the docs:

- ``samples_<set>``: a fixed sample of every evaluation set whose inputs are the same for all methods (MNIST,
  PMNIST, OOD sets, transfer FGSM, DADC), with the true label, and below each image every method's prediction and
  confidence, green when right and red when wrong (black on OOD sets, which have no right answer). Predictions are
  the run's saved ones (``predictions/*.npz``); nothing is re-inferred.
- ``attacks_<set>``: per white-box set of the run (``fgsm:eps=E``, ``pgd:eps=E``) and per network, a few digits:
  clean image, adversarial image, perturbation x_adv - x (diverging colour map, symmetric scale +-eps).
- ``targeted_pgd``: targeted L-inf PGD from one digit towards each class, a 10-column row per network (adversarial
  image, then perturbation). Optionally (``judge``) the fraction of targeted results on more digits that another
  network of the run labels as the target: a number for "do the perturbations look like the target digit".
- ``uap_<set>``: each network's universal perturbation at one colour scale, and a digit with it added.
- ``fooling``: rubbish-class images, one per target class, per network.
- ``trustgan_attacker``: samples of each TrustGAN checkpoint's confidence attacker, with the target's answer.
- ``dadc``: the examples people flagged on ``bench serve``, with what each served method said at the time.

Where images come from: a run saves predictions, UAP perturbations (the UAP cache) and checkpoints, not adversarial
images. White-box, targeted and fooling images are therefore *regenerated* from the run's checkpoints with the
same code and seeds as the run (captions say so, and where the run saved predictions on the same images, how many
of the regenerated images get the same prediction). A gallery never trains; a UAP missing from the cache is
recomputed (and cached) with the run's parameters, and its caption says so.

Methods that share one network (msp and the post-hoc scorers) are attacked once and shown as one row.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.mnist import to_float
from bench.errors import BenchError, UsageError
from bench.store import RunStore, cell_key

GALLERY_SEED = 24  # the fixed sample of each evaluation set
SAMPLE_SIZE = 10
TRUSTGAN_SAMPLES = 12
DADC_MAX = 20
TARGETED_STEPS = 40
DEFAULT_TARGETED_EPS = 0.3  # when the run has no L-inf attack set: the Madry MNIST radius advtrain trains at
PERT_CMAP = "RdBu_r"  # diverging: red = pixel made brighter, blue = darker, white = unchanged
RIGHT, WRONG, NEUTRAL = "#1a7f37", "#cf222e", "#24292f"
SECTIONS = ("samples", "attacks", "targeted", "uap", "fooling", "trustgan", "dadc")


def check_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("bench gallery needs matplotlib: pip install -e '.[plots]'") from None


@dataclass(frozen=True)
class GalleryConfig:
    methods: tuple[str, ...] = ()  # () = every method of the run
    datasets: tuple[str, ...] = ()  # () = every eval set of the run
    sections: tuple[str, ...] = SECTIONS
    seed: int | None = None  # run seed whose checkpoints and predictions are shown; None = the smallest
    fold: int = 0
    digits: int = 4  # white-box panels: the first test images of this many distinct digits
    target_index: int = 0  # targeted PGD: index of the MNIST test image attacked towards every class
    targeted_eps: float = 0.0  # 0 = the run's largest L-inf attack radius, else DEFAULT_TARGETED_EPS
    targeted_steps: int = TARGETED_STEPS
    judge: str = ""  # a method of the run whose network labels other networks' targeted results
    judge_images: int = 50  # test images per network for the judge's count (x 9 targets each)
    device: str = "cpu"


@dataclass
class GalleryResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line each: what was not drawn and why
    notes: list[str] = field(default_factory=list)  # numbers worth printing (judge rates, agreement)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------- pure helpers
def sample_indices(labels: np.ndarray, k: int = SAMPLE_SIZE, seed: int = GALLERY_SEED) -> np.ndarray:
    """The fixed sample of a set: with labels, one seeded random example of each class present (in class order,
    up to ``k``); without (OOD, label -1), ``k`` seeded random indices in increasing order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if classes:
        return np.array([int(rng.choice(np.flatnonzero(labels == c))) for c in classes[:k]], dtype=int)
    return np.sort(rng.choice(len(labels), size=min(k, len(labels)), replace=False))


def first_distinct(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first example of each of the first ``k`` distinct labels, in order of appearance."""
    seen: dict[int, int] = {}
    for i, y in enumerate(np.asarray(labels).tolist()):
        if y not in seen:
            seen[y] = i
            if len(seen) == k:
                break
    return np.array(list(seen.values()), dtype=int)


def targeted_pgd(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float, steps: int,
                 step_size: float | None = None) -> torch.Tensor:
    """Targeted L-inf PGD without random start (deterministic): descend CE(f(x'), target) by signed steps of
    ``step_size`` (default 2.5 eps / steps), projecting onto the eps ball around ``x`` and onto [0, 1]. ``model``
    is used in eval mode and its mode restored; returns x' detached."""
    alpha = 2.5 * eps / steps if step_size is None else step_size
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        adv = x.detach().clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() - alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    finally:
        for m, mode in modes:
            m.train(mode)
    return adv.detach()


def safe_name(eval_set: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", eval_set).replace("=", "")


def _close(name: str, have: list[str]) -> str:
    near = difflib.get_close_matches(name, have, n=1)
    return f"did you mean {near[0]}? " if near else ""


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Network:
    """One attacked network and the methods that share it (msp and its post-hoc scorers)."""

    label: str
    methods: list[str]
    method: Any  # the first method, fitted (its ``classifier`` is attacked, its ``predict`` scores)


class RunView:
    """What a gallery reads from a run directory: rows, saved predictions, manifest, fitted methods."""

    def __init__(self, run_dir: Path, cfg: GalleryConfig):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise UsageError(f"run directory {self.dir} does not exist")
        store = RunStore(self.dir)
        self.manifest = store.read_manifest()
        if self.manifest is None:
            raise UsageError(f"{self.dir} is not a run directory (no manifest.json); give a directory made by "
                             "`bench run`")
        rows = store.rows() if store.has_results() else []
        if not rows:
            raise UsageError(f"{self.dir} has no finished cells; run it first (python -m bench run ... --out "
                             f"{self.dir})")
        seeds = sorted({int(r["seed"]) for r in rows if int(r["fold"]) == cfg.fold})
        if not seeds:
            raise UsageError(f"run {self.dir} has no cells of fold {cfg.fold}")
        if cfg.seed is not None and cfg.seed not in seeds:
            raise UsageError(f"run {self.dir} has no seed {cfg.seed} (it has: {', '.join(map(str, seeds))})")
        self.seed, self.fold = (cfg.seed if cfg.seed is not None else seeds[0]), cfg.fold
        mine = [r for r in rows if int(r["seed"]) == self.seed and int(r["fold"]) == self.fold]
        self.rows = mine
        listed = [m for m in self.manifest.get("config", {}).get("methods", []) if "*" not in m]
        have = set(r["method"] for r in mine)  # in the run's --methods order, then any other (wildcard runs)
        all_methods = [m for m in listed if m in have] + sorted(have - set(listed))
        all_sets = list(dict.fromkeys(r["eval_set"] for r in mine if r["eval_set"] != "cost"))
        self.methods = self._choose(cfg.methods, all_methods, "method")
        self.eval_sets = self._choose(cfg.datasets, all_sets, "eval set")
        config = self.manifest.get("config", {})
        cache_dir = config.get("cache_dir") or "results/cache"
        self.ctx_args = {"data_dir": Path(config.get("data_dir") or "data"), "allow_download": False,
                         "cache_dir": Path(cache_dir), "device": torch.device(cfg.device)}
        self.max_eval = int(config.get("eval", {}).get("max_eval", 0) or 0)
        self.device = torch.device(cfg.device)
        self._fitted: dict[str, Any] = {}
        self._data: dict = {}  # embedded data sets, loaded once
        self._networks: list[Network] | None = None
        self.load_errors: dict[str, str] = {}

    def _choose(self, wanted: tuple[str, ...], have: list[str], what: str) -> list[str]:
        if not wanted:
            return have
        for name in wanted:
            if name not in have:
                raise UsageError(f"{what} {name!r} is not in run {self.dir} (seed {self.seed}); "
                                 f"{_close(name, have)}it has: {', '.join(have)}")
        return list(dict.fromkeys(wanted))

    def context(self, max_eval: int | None = None) -> EvalContext:
        """An eval context like the run's (its cap unless ``max_eval``); all share one cache of embedded data."""
        return EvalContext(max_eval=self.max_eval if max_eval is None else max_eval, _cache=self._data,
                           **self.ctx_args)

    def saved(self, method: str, eval_set: str) -> dict[str, np.ndarray] | None:
        path = self.dir / "predictions" / f"{cell_key(method, self.seed, self.fold, eval_set)}.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def metric(self, method: str, eval_set: str, metric: str) -> float | None:
        for r in self.rows:
            if r["method"] == method and r["eval_set"] == eval_set and r["metric"] == metric:
                return float(r["value"])
        return None

    def method(self, name: str) -> Any | None:
        """The fitted method from the run's checkpoints (None, with the reason in ``load_errors``, when its
        checkpoint is missing)."""
        if name not in self._fitted and name not in self.load_errors:
            from bench.loading import load_method

            try:
                self._fitted[name] = load_method(self.dir, name, self.seed, self.fold, self.device)
            except BenchError as e:
                self.load_errors[name] = str(e)
        return self._fitted.get(name)

    def networks(self) -> list[Network]:
        """The selected methods grouped by network (content hash of the attacked classifier)."""
        if self._networks is None:
            from bench.datasets.uap import model_hash

            groups: dict[str, Network] = {}
            for name in self.methods:
                m = self.method(name)
                if m is None:
                    continue
                h = model_hash(m.classifier)
                if h in groups:
                    groups[h].methods.append(name)
                else:
                    groups[h] = Network(name, [name], m)
            for net in groups.values():
                if len(net.methods) > 1:
                    net.label = f"{net.methods[0]} (= {', '.join(net.methods[1:])})"
            self._networks = list(groups.values())
        return self._networks


# ------------------------------------------------------------------------------------------------ drawing
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _img(ax, image: np.ndarray, title: str = "", color: str = NEUTRAL) -> None:
    ax.imshow(np.asarray(image).reshape(image.shape[-2], image.shape[-1]), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color, pad=2)


def _pert(ax, delta: np.ndarray, scale: float, title: str = "", color: str = NEUTRAL):
    im = ax.imshow(np.asarray(delta).reshape(delta.shape[-2], delta.shape[-1]), cmap=PERT_CMAP, vmin=-scale,
                   vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color, pad=2)
    return im


def _row_label(ax, text: str) -> None:
    ax.set_ylabel(text, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)


def _save(fig, out_dir: Path, name: str, caption: str) -> list[Path]:
    """Caption under the figure (wrapped), then PNG (small: 100 dpi) and PDF."""
    import textwrap

    plt = _plt()
    width = max(40, int(fig.get_figwidth() * 19))  # characters of 6.5 pt text per line
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(caption, width)), fontsize=6.5, ha="left", va="top")
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    # a 256-colour palette keeps the PNGs at tens of KB (noise-like perturbations compress badly in RGBA)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        small.save(out_dir / f"{name}.png", optimize=True)
    return [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]


# ------------------------------------------------------------------------------------------------ sections
@dataclass
class SamplePanel:
    """The fixed sample of one eval set: images (k, 28, 28) in [0, 1], true labels (-1: none), and per method
    the saved predicted class and confidence at those indices."""

    eval_set: str
    indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    rows: list[tuple[str, np.ndarray, np.ndarray]]  # (method, predicted (k,), confidence (k,))


def sample_panel(view: RunView, eval_set: str) -> SamplePanel:
    """Rebuilds the set as the run did (same cap); raises BenchError with the reason when it cannot."""
    saved = {m: view.saved(m, eval_set) for m in view.methods}
    saved = {m: s for m, s in saved.items() if s is not None}
    if not saved:
        raise BenchError(f"samples of {eval_set}: the run saved no predictions for it")
    if eval_set.startswith("fgsm-transfer"):
        _check_transfer_source(view, eval_set)
    data = evalsets.build(eval_set, view.context())
    labels = data.labels.cpu().numpy()
    for m, s in saved.items():
        if len(s["labels"]) != len(labels) or not np.array_equal(s["labels"], labels):
            raise BenchError(f"samples of {eval_set}: rebuilt now, its labels differ from those {m} saw in the run")
    idx = sample_indices(labels)
    images = to_float(data.images[torch.as_tensor(idx)]).cpu().numpy()[:, 0]
    rows = [(m, s["probs"][idx].argmax(1), s["confidence"][idx]) for m, s in saved.items()]
    return SamplePanel(eval_set, idx, images, labels[idx], rows)


def _check_transfer_source(view: RunView, eval_set: str) -> None:
    """fgsm-transfer images need the fixed source model; a gallery never trains it."""
    from bench.cache import CheckpointCache
    from bench.datasets.adversarial import SOURCE_SEED, parse_params
    from bench.datasets.splits import SplitSpec
    from bench.methods.base import FitContext
    from bench.methods.training import TrainRecipe

    source = str(parse_params(eval_set.partition(":")[2], "fgsm-transfer", {"eps": float, "source": str})
                 .get("source", "lenet"))
    recipe = TrainRecipe(optimizer="adam", lr=2e-3, batch_size=128, epochs=3)  # as adversarial.source_model
    key = FitContext(recipe=recipe, split_id=SplitSpec().split_id).baseline_key(source, 10, SOURCE_SEED)
    if CheckpointCache(view.ctx_args["cache_dir"]).get(key) is None:
        raise BenchError(f"samples of {eval_set}: its source model is not in the cache "
                         f"{view.ctx_args['cache_dir']} (a gallery does not train it)")


def draw_samples(panel: SamplePanel, run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = _plt()
    k, m = len(panel.indices), len(panel.rows)
    fig, axes = plt.subplots(1 + m, k, figsize=(0.85 * k + 1.2, 0.95 + 0.32 * m),
                             gridspec_kw={"height_ratios": [3] + [1] * m},
                             squeeze=False, layout="constrained")
    labelled = bool((panel.labels >= 0).any())
    for j in range(k):
        true = f"true {panel.labels[j]}" if panel.labels[j] >= 0 else f"#{panel.indices[j]}"
        _img(axes[0, j], panel.images[j], true)
        for i, (method, pred, conf) in enumerate(panel.rows):
            ax = axes[1 + i, j]
            ax.axis("off")
            color = NEUTRAL if not labelled else (RIGHT if pred[j] == panel.labels[j] else WRONG)
            ax.text(0.5, 0.5, f"{pred[j]} ({conf[j]:.2f})", color=color, fontsize=7, ha="center", va="center",
                    transform=ax.transAxes)
            if j == 0:
                ax.text(-0.1, 0.5, method, fontsize=7, ha="right", va="center", transform=ax.transAxes)
    fig.suptitle(f"{panel.eval_set}: what each method answers (prediction and confidence)", fontsize=9)
    what = ("green = right, red = wrong" if labelled else
            "no true class (out of distribution): any confident answer is a mistake")
    caption = (f"Run {run_id}, seed {seed}. A fixed sample of {panel.eval_set} (one seeded example per class "
               f"where there are classes; gallery seed {GALLERY_SEED}); under each image, each method's predicted "
               f"class and confidence from the run's saved predictions ({what}; confidence is each method's own "
               "score, higher = more trustworthy).")
    return _save(fig, out_dir, f"samples_{safe_name(panel.eval_set)}", caption)


@dataclass
class AttackRow:
    network: str
    clean: np.ndarray  # (d, 28, 28)
    adv: np.ndarray
    pert: np.ndarray  # adv - clean
    clean_pred: list[tuple[int, float]]
    adv_pred: list[tuple[int, float]]
    agree: int  # regenerated adversarial predictions equal to the run's saved ones
    compared: int


def attack_rows(view: RunView, eval_set: str, digits: int) -> tuple[np.ndarray, np.ndarray, list[AttackRow]]:
    """Regenerates the white-box set ``eval_set`` on the first test images of ``digits`` distinct classes, per
    network, with the set's own builder (same attack, parameters and seed as the run)."""
    test = view.context().embedded("mnist", "test")
    n = view.context().cap(len(test))
    idx = first_distinct(test.labels[:n].numpy(), digits)
    small = view.context(max_eval=int(idx.max()) + 1)
    out = []
    for net in view.networks():
        data = evalsets.build(eval_set, small, net.method)
        clean = to_float(test.images[: len(data.labels)]).to(view.device)
        adv = data.images.to(view.device).float()
        pc = net.method.predict(clean[idx])
        pa = net.method.predict(adv[idx])
        saved = view.saved(net.methods[0], eval_set)
        agree = compared = 0
        if saved is not None and len(saved["probs"]) > idx.max():
            compared = len(idx)
            agree = int((saved["probs"][idx].argmax(1) == pa.probs.numpy().argmax(1)).sum())
        c, a = clean[idx].cpu().numpy()[:, 0], adv[idx].cpu().numpy()[:, 0]
        out.append(AttackRow(net.label, c, a, a - c,
                             [(int(p.argmax()), float(q)) for p, q in zip(pc.probs.numpy(), pc.confidence)],
                             [(int(p.argmax()), float(q)) for p, q in zip(pa.probs.numpy(), pa.confidence)],
                             agree, compared))
    return idx, test.labels[idx].numpy(), out


def _eps_of(eval_set: str) -> float | None:
    m = re.search(r"eps=([0-9.eE+-]+)", eval_set)
    return float(m.group(1)) if m else None


def draw_attacks(eval_set: str, labels: np.ndarray, rows: list[AttackRow], run_id: str, seed: int,
                 out_dir: Path) -> list[Path]:
    plt = _plt()
    d = len(labels)
    eps = _eps_of(eval_set) or max(float(np.abs(r.pert).max()) for r in rows) or 1.0
    fig, axes = plt.subplots(len(rows), 3 * d, figsize=(0.8 * 3 * d + 1.6, 1.0 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for i, r in enumerate(rows):
        for j in range(d):
            y = int(labels[j])
            pc, cc = r.clean_pred[j]
            pa, ca = r.adv_pred[j]
            _img(axes[i, 3 * j], r.clean[j], f"clean\n{pc} ({cc:.2f})", RIGHT if pc == y else WRONG)
            _img(axes[i, 3 * j + 1], r.adv[j], f"attacked\n{pa} ({ca:.2f})", RIGHT if pa == y else WRONG)
            im = _pert(axes[i, 3 * j + 2], r.pert[j], eps, "x_adv - x\n")
        _row_label(axes[i, 0], r.network)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="x_adv - x (pixels in [0, 1])")
    fig.suptitle(f"White-box {eval_set} against each network: digits {', '.join(map(str, labels))}", fontsize=9)
    agree = sum(r.agree for r in rows)
    compared = sum(r.compared for r in rows)
    check = (f" On these images the regenerated attack gets the run's saved prediction {agree} of {compared} times."
             if compared else "")
    caption = (f"Run {run_id}, seed {seed}. Regenerated: the run saves predictions, not adversarial images, so the "
               f"attack was rerun on the run's checkpoints with the set's own code, parameters and seed.{check} "
               "Titles: predicted class (confidence), green = right, red = wrong. Perturbation colour scale "
               f"symmetric at +-{eps:g} (red = brighter, blue = darker). Methods sharing one network are one row.")
    return _save(fig, out_dir, f"attacks_{safe_name(eval_set)}", caption)


@dataclass
class TargetedRow:
    network: str
    adv: np.ndarray  # (10, 28, 28): towards class 0..9
    pert: np.ndarray
    pred: list[tuple[int, float]]
    judge_rate: float | None = None  # % of targeted results on more images the judge labels as the target


def run_linf_radius(view: RunView) -> float:
    """The run's largest L-inf attack radius (pgd, fgsm, uap with p=inf), else DEFAULT_TARGETED_EPS."""
    radii = []
    for s in view.eval_sets:
        fam = s.partition(":")[0]
        if fam in ("pgd", "fgsm") and _eps_of(s):
            radii.append(_eps_of(s))
        elif fam == "uap" and "p=inf" in s:
            m = re.search(r"xi=([0-9.]+)", s)
            radii.append(float(m.group(1)) if m else None)
    radii = [r for r in radii if r]
    return max(radii) if radii else DEFAULT_TARGETED_EPS


def targeted_rows(view: RunView, cfg: GalleryConfig, eps: float) -> tuple[np.ndarray, int, list[TargetedRow]]:
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[cfg.target_index : cfg.target_index + 1]).to(view.device)
    targets = torch.arange(10, device=view.device)
    rows = []
    for net in view.networks():
        adv = targeted_pgd(net.method.classifier, x.repeat(10, 1, 1, 1), targets, eps, cfg.targeted_steps)
        p = net.method.predict(adv)
        rows.append(TargetedRow(net.label, adv.cpu().numpy()[:, 0], (adv - x).cpu().numpy()[:, 0],
                                [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)]))
    return x.cpu().numpy()[0, 0], int(test.labels[cfg.target_index]), rows


def judge_rates(view: RunView, judge: str, eps: float, steps: int, n_images: int) -> dict[str, float]:
    """Per network other than the judge's: % of targeted PGD results (first ``n_images`` test images, every
    target other than the true class) that the judge's network classifies as the target."""
    jm = view.method(judge)
    if jm is None:
        raise UsageError(f"--judge {judge}: {view.load_errors.get(judge, 'not loadable')}")
    from bench.datasets.uap import model_hash

    jh = model_hash(jm.classifier)
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[:n_images]).to(view.device)
    y = test.labels[:n_images].to(view.device)
    xs = x.repeat_interleave(9, 0)
    # every target but the true class: (y + 1 .. y + 9) mod 10
    ts = (y.repeat_interleave(9) + torch.arange(1, 10, device=view.device).repeat(len(y))) % 10
    out = {}
    for net in view.networks():
        if model_hash(net.method.classifier) == jh:
            continue
        adv = targeted_pgd(net.method.classifier, xs, ts, eps, steps)
        pred = jm.predict(adv).probs.argmax(1).to(ts.device)
        out[net.label] = 100.0 * float((pred == ts).float().mean())
    return out


def draw_targeted(x: np.ndarray, label: int, rows: list[TargetedRow], eps: float, steps: int, judge: str,
                  n_judge: int, run_id: str, seed: int, index: int, out_dir: Path) -> list[Path]:
    plt = _plt()
    fig, axes = plt.subplots(2 * len(rows), 11, figsize=(0.8 * 11 + 1.6, 1.7 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for i, r in enumerate(rows):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        _img(top[0], x, f"clean\n{label}")
        bottom[0].axis("off")
        for t in range(10):
            p, c = r.pred[t]
            _img(top[t + 1], r.adv[t], f"to {t}\n{p} ({c:.2f})", RIGHT if p == t else WRONG)
            im = _pert(bottom[t + 1], r.pert[t], eps)
        name = r.network if r.judge_rate is None else f"{r.network}\njudge: {r.judge_rate:.0f}% target"
        _row_label(top[0], name)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="x_adv - x (pixels in [0, 1])")
    fig.suptitle(f"Targeted PGD from test image #{index} (a {label}) towards each class, L-inf eps {eps:g}",
                 fontsize=9)
    judged = (f" 'judge: N% target': of the targeted results on the first {n_judge} test images (9 targets each), "
              f"the % that {judge}'s network (never attacked here) labels as the target." if judge else "")
    caption = (f"Run {run_id}, seed {seed}. Not saved by any run: made here on the run's checkpoints ({steps} "
               f"signed steps of 2.5 eps / {steps}, no random start). Per network: top row the attacked images "
               "(title: the target class, then the prediction (confidence), green = the network now says the target), "
               "bottom row "
               f"the perturbation x_adv - x at +-{eps:g}. Perturbations that look like strokes of the target "
               f"digit mean the network's gradients follow the digits' shapes.{judged}")
    return _save(fig, out_dir, "targeted_pgd", caption)


@dataclass
class UapRow:
    network: str
    v: np.ndarray  # (28, 28)
    cached: bool
    example: np.ndarray  # clip(x + v)
    pred: tuple[int, float]
    fooling: float | None  # the run's uap_fooling_rate


def uap_rows(view: RunView, eval_set: str) -> tuple[int, list[UapRow]]:
    from bench.datasets.uap import cache_path, parse

    q = parse(eval_set.partition(":")[2])
    test = view.context().embedded("mnist", "test")
    x = to_float(test.images[:1]).to(view.device)
    rows = []
    for net in view.networks():
        model = net.method.classifier
        path = cache_path(view.ctx_args["cache_dir"], model, q)
        cached = path is not None and path.exists()
        if not cached:  # the set's own builder computes it with the run's parameters and caches it
            evalsets.build(eval_set, view.context(max_eval=1), net.method)
        v = torch.load(path, map_location="cpu", weights_only=True)["v"].to(view.device)
        ex = (x + v).clamp(0, 1)
        p = net.method.predict(ex)
        rows.append(UapRow(net.label, v.cpu().numpy()[0, 0], cached, ex.cpu().numpy()[0, 0],
                           (int(p.probs[0].argmax()), float(p.confidence[0])),
                           view.metric(net.methods[0], eval_set, "uap_fooling_rate")))
    return int(test.labels[0]), rows


def draw_uap(eval_set: str, label: int, rows: list[UapRow], run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = _plt()
    scale = max(float(np.abs(r.v).max()) for r in rows) or 1.0
    fig, axes = plt.subplots(2, len(rows), figsize=(1.25 * len(rows) + 1.2, 3.0),
                             squeeze=False, layout="constrained")
    im = None
    for j, r in enumerate(rows):
        fool = f"fools {r.fooling:.0f}%" if r.fooling is not None else ""
        im = _pert(axes[0, j], r.v, scale, f"{r.network}\n{fool}" + ("" if r.cached else "\n(regenerated)"))
        p, c = r.pred
        _img(axes[1, j], r.example, f"{label} + v: {p} ({c:.2f})", RIGHT if p == label else WRONG)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="v (pixels in [0, 1])")
    fig.suptitle(f"Universal perturbation of each network ({eval_set})", fontsize=9)
    regen = [r.network for r in rows if not r.cached]
    where = ("from the UAP cache the run wrote" if not regen else
             f"from the run's UAP cache, except {', '.join(regen)}: not in the cache, recomputed here with the "
             "run's parameters")
    caption = (f"Run {run_id}, seed {seed}. Top: each network's single perturbation v, {where}; one colour scale "
               f"for all (+-{scale:.3g}, red = brighter). 'fools N%': the run's fooling rate on the test set "
               "(prediction changed). Bottom: the first test image plus v, clipped to [0, 1]: predicted class "
               "(confidence), green = still right.")
    return _save(fig, out_dir, safe_name(eval_set), caption)


@dataclass
class FoolingRow:
    network: str
    images: np.ndarray  # (10, 28, 28), target class = column
    reached: np.ndarray  # target posterior
    pred: list[tuple[int, float]]
    agree: int
    compared: int


def fooling_rows(view: RunView, eval_set: str) -> list[FoolingRow]:
    from bench.datasets.adversarial import parse_params
    from bench.datasets.fooling import fooling_images

    q = parse_params(eval_set.partition(":")[2], "fooling", {"n": int, "steps": int, "eps": float})
    steps, eps = int(q.get("steps", 60)), float(q.get("eps", 0.25))
    rows = []
    for net in view.networks():
        model = net.method.classifier
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:  # the run's first 10 images: the same seeded noise and target i mod 10
            imgs, reached = fooling_images(model, 10, steps, eps, getattr(net.method, "num_classes", 10), view.device)
        finally:
            for m, mode in modes:
                m.train(mode)
        p = net.method.predict(imgs.to(view.device))
        saved = view.saved(net.methods[0], eval_set)
        agree = compared = 0
        if saved is not None and len(saved["probs"]) >= 10:
            compared = 10
            agree = int((saved["probs"][:10].argmax(1) == p.probs.numpy().argmax(1)).sum())
        rows.append(FoolingRow(net.label, imgs.numpy()[:, 0], reached.numpy(),
                               [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)],
                               agree, compared))
    return rows


def draw_fooling(eval_set: str, rows: list[FoolingRow], run_id: str, seed: int, out_dir: Path) -> list[Path]:
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 10, figsize=(0.85 * 10 + 1.6, 1.0 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for i, r in enumerate(rows):
        for t in range(10):
            p, c = r.pred[t]
            _img(axes[i, t], r.images[t], f"to {t}\n{p} ({c:.2f})", WRONG if p == t else RIGHT)
        _row_label(axes[i, 0], r.network)
    fig.suptitle(f"Fooling images ({eval_set}): noise pushed towards each class", fontsize=9)
    agree, compared = sum(r.agree for r in rows), sum(r.compared for r in rows)
    check = (f" The regenerated images get the run's saved prediction {agree} of {compared} times." if compared
             else "")
    caption = (f"Run {run_id}, seed {seed}. Regenerated (the run saves predictions only): the set's first 10 "
               f"images per network, seeded uniform noise moved towards class 0..9 by gradient ascent.{check} "
               "Title: the target class, then the predicted class (confidence); red = fooled into the target class.")
    return _save(fig, out_dir, safe_name(eval_set), caption)


def trustgan_samples(method: Any, n: int = TRUSTGAN_SAMPLES, seed: int = GALLERY_SEED
                     ) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Samples of the checkpoint's attacker from seeded U[0, 1) noise (as in training), mapped from [-1, 1] to
    pixels, and the target's prediction on them."""
    gan = method.attacker
    device = next(gan.parameters()).device
    z = torch.rand((n, gan.out.out_channels, 28, 28), generator=torch.Generator().manual_seed(seed)).to(device)
    was = gan.training
    gan.eval()
    try:
        with torch.no_grad():
            images = ((gan(z) + 1.0) * 0.5).clamp(0, 1)
    finally:
        gan.train(was)
    p = method.predict(images)
    return images.cpu().numpy()[:, 0], [(int(a.argmax()), float(c)) for a, c in zip(p.probs.numpy(), p.confidence)]


def draw_trustgan(rows: list[tuple[str, np.ndarray, list[tuple[int, float]]]], run_id: str, seed: int,
                  out_dir: Path) -> list[Path]:
    plt = _plt()
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(0.85 * n + 1.6, 1.0 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    for i, (name, images, preds) in enumerate(rows):
        for j in range(n):
            p, c = preds[j]
            _img(axes[i, j], images[j], f"{p} ({c:.2f})")
        _row_label(axes[i, 0], name)
    fig.suptitle("TrustGAN: what the confidence attacker generates, and the target's answer", fontsize=9)
    caption = (f"Run {run_id}, seed {seed}. Samples of the attacker saved in each TrustGAN checkpoint (the final one: "
               "the snapshots kept during training for replay are not saved, so no earlier attacker can be shown), "
               f"from seeded uniform noise (gallery seed {GALLERY_SEED}); title: the target network's predicted "
               "class (confidence). A well-trained target answers these with low confidence.")
    return _save(fig, out_dir, "trustgan_attacker", caption)


def draw_dadc(view: RunView, out_dir: Path) -> list[Path]:
    from bench.dadc.preprocess import from_png
    from bench.dadc.store import DadcStore

    store = DadcStore(view.dir)
    if not store.exists():
        raise BenchError(f"dadc: no examples were flagged for this run (no {store.path}; collect some with "
                         f"python -m bench serve --run {view.dir})")
    examples = store.examples()[-DADC_MAX:]
    if not examples:
        raise BenchError(f"dadc: {store.path} holds no examples yet")
    preds = {e.id: {p.method: p for p in store.predictions(e.id)} for e in examples}
    methods = [m for m in dict.fromkeys(p for e in examples for p in preds[e.id]) if m in view.methods]
    if not methods:
        raise BenchError("dadc: none of the selected methods was shown on the examples")
    plt = _plt()
    k = len(examples)
    fig, axes = plt.subplots(1 + len(methods), k, figsize=(0.85 * k + 1.2, 0.95 + 0.32 * len(methods)),
                             gridspec_kw={"height_ratios": [3] + [1] * len(methods)},
                             squeeze=False, layout="constrained")
    for j, e in enumerate(examples):
        _img(axes[0, j], from_png(e.image_png) / 255.0, f"#{e.id}: true {e.label}")
        for i, m in enumerate(methods):
            ax = axes[1 + i, j]
            ax.axis("off")
            p = preds[e.id].get(m)
            if p is not None:
                ax.text(0.5, 0.5, f"{p.predicted} ({p.confidence:.2f})" + (f" r{p.round}" if p.round else ""),
                        color=RIGHT if p.predicted == e.label else WRONG, fontsize=7, ha="center", va="center",
                        transform=ax.transAxes)
            if j == 0:
                ax.text(-0.1, 0.5, m, fontsize=7, ha="right", va="center", transform=ax.transAxes)
    fig.suptitle("DADC: digits people drew to fool the models, and what each method said", fontsize=9)
    caption = (f"Run {view.manifest.get('run_id', view.dir.name)}. The last {k} examples flagged on bench serve "
               "(the 28x28 image the models saw, the digit the person gave); under each, the prediction "
               "(confidence) each served method made at the time, stored with the example ('rN': a fine-tuning "
               "round N model); green = right, red = wrong.")
    return _save(fig, out_dir, "dadc", caption)


# ------------------------------------------------------------------------------------------------ driver
def check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".gallery-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to --out {out_dir}: {e.strerror or e}; choose another --out") from None


def make_gallery(run_dir: str | Path, out_dir: str | Path, cfg: GalleryConfig = GalleryConfig(),
                 log: Callable[[str], None] | None = None) -> GalleryResult:
    """Writes every picture the run allows into ``out_dir``; what it cannot draw goes to ``skipped`` (one line
    each). Bad input (no run, unknown names, unwritable folder) raises UsageError before any work."""
    t0 = time.perf_counter()
    check_available()
    for s in cfg.sections:
        if s not in SECTIONS:
            raise UsageError(f"unknown gallery section {s!r}; {_close(s, list(SECTIONS))}choose from "
                             f"{', '.join(SECTIONS)}")
    if not 1 <= cfg.digits <= 10:
        raise UsageError(f"--digits {cfg.digits} must be between 1 and 10")
    if not 0 <= cfg.target_index < 10_000:
        raise UsageError(f"--target-index {cfg.target_index} is outside the MNIST test set (0..9999)")
    if cfg.targeted_eps < 0 or cfg.targeted_steps < 1 or cfg.judge_images < 1:
        raise UsageError("--targeted-eps must be >= 0 (0 = the run's radius), --targeted-steps and "
                         "--judge-images >= 1")
    view = RunView(Path(run_dir), cfg)
    if cfg.judge and cfg.judge not in view.methods:
        have = list(dict.fromkeys(r["method"] for r in view.rows))
        if cfg.judge not in have:
            raise UsageError(f"--judge {cfg.judge!r} is not a method of run {view.dir}; {_close(cfg.judge, have)}"
                             f"it has: {', '.join(have)}")
    out = Path(out_dir)
    check_out_dir(out)
    res = GalleryResult()
    run_id = str(view.manifest.get("run_id", view.dir.name))
    say = log or (lambda s: None)

    def attempt(what: str, fn: Callable[[], list[Path]]) -> None:
        try:
            paths = fn()
        except UsageError:
            raise
        except BenchError as e:
            res.skipped.append(str(e))
            return
        res.written.extend(paths)
        for p in paths:
            say(f"wrote {p}")

    families = {s: s.partition(":")[0] for s in view.eval_sets}
    model_free = [s for s in view.eval_sets if not evalsets.needs_model(s)]
    if "samples" in cfg.sections:
        for s in model_free:
            attempt(f"samples {s}", lambda s=s: draw_samples(sample_panel(view, s), run_id, view.seed, out))
    wants_models = {"attacks", "targeted", "uap", "fooling", "trustgan"} & set(cfg.sections)
    networks = view.networks() if wants_models else []
    for name, reason in view.load_errors.items():
        res.skipped.append(f"{name}: no pictures that need its network ({reason})")
    if wants_models and not networks:
        res.skipped.append("attacks, targeted, uap, fooling, trustgan: no method of the run could be loaded "
                           "from its checkpoints")
    elif networks:
        if "attacks" in cfg.sections:
            white = [s for s in view.eval_sets if families[s] in ("fgsm", "pgd")]
            if not white:
                res.skipped.append("attacks: the run has no white-box set (fgsm:eps=E or pgd:eps=E)")
            for s in white:
                def _attacks(s=s):
                    idx, labels, rows = attack_rows(view, s, cfg.digits)
                    return draw_attacks(s, labels, rows, run_id, view.seed, out)
                attempt(f"attacks {s}", _attacks)
        if "targeted" in cfg.sections:
            def _targeted():
                eps = cfg.targeted_eps or run_linf_radius(view)
                x, label, rows = targeted_rows(view, cfg, eps)
                if cfg.judge:
                    rates = judge_rates(view, cfg.judge, eps, cfg.targeted_steps, cfg.judge_images)
                    for r in rows:
                        r.judge_rate = rates.get(r.network)
                        if r.judge_rate is not None:
                            res.notes.append(f"targeted PGD eps {eps:g}: {cfg.judge} labels {r.judge_rate:.1f}% "
                                             f"of {r.network}'s targeted results as the target")
                return draw_targeted(x, label, rows, eps, cfg.targeted_steps, cfg.judge, cfg.judge_images,
                                     run_id, view.seed, cfg.target_index, out)
            attempt("targeted", _targeted)
        if "uap" in cfg.sections:
            uaps = [s for s in view.eval_sets if families[s] == "uap"]
            if not uaps:
                res.skipped.append("uap: the run has no universal perturbation set (uap:xi=..,p=..)")
            for s in uaps:
                def _uap(s=s):
                    label, rows = uap_rows(view, s)
                    return draw_uap(s, label, rows, run_id, view.seed, out)
                attempt(f"uap {s}", _uap)
        if "fooling" in cfg.sections:
            fool = [s for s in view.eval_sets if families[s] == "fooling"]
            if not fool:
                res.skipped.append("fooling: the run has no fooling set")
            for s in fool:
                attempt(f"fooling {s}", lambda s=s: draw_fooling(s, fooling_rows(view, s), run_id, view.seed, out))
        if "trustgan" in cfg.sections:
            gans = [n for n in networks if getattr(n.method, "attacker", None) is not None]
            if not gans:
                res.skipped.append("trustgan: no selected method has a saved attacker (trustgan)")
            else:
                attempt("trustgan", lambda: draw_trustgan([(n.label, *trustgan_samples(n.method)) for n in gans],
                                                          run_id, view.seed, out))
    if "dadc" in cfg.sections:
        attempt("dadc", lambda: draw_dadc(view, out))
    res.seconds = time.perf_counter() - t0
    return res
