"""Registry of evaluation sets. Each entry builds an ``EvalData`` from an ``EvalContext``.

Shift families and groups appear in every result row (``shift``, ``severity``); OOD sets carry a near/far group
(following OpenOOD v1's MNIST benchmark, near: notMNIST and Fashion-MNIST, far: Texture, CIFAR-10, TinyImageNet and
Places365; OpenOOD v1.5 has no MNIST benchmark. bench adds KMNIST and EMNIST letters as near and noise as far).

``EVAL_SETS`` holds the built-in sets, registered at import and never changed afterwards. A run's own sets (the test
part of a user's ``--data``, ``--ood`` folders) live in the run's copy of it (``EVAL_SETS.extended``), which every
function below takes as ``sets`` and an ``EvalContext`` carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from bench.datasets import notmnist
from bench.datasets.mnist import ImageSet, load_embedded
from bench.errors import DataError, UsageError
from bench.registry import Registry

NOISE_SEED = 1234  # fixed: every method and seed sees the same noise images


@dataclass(frozen=True)
class EvalData:
    name: str
    images: torch.Tensor  # uint8 [0, 255] or float [0, 1], (N, 1, 28, 28)
    labels: torch.Tensor  # int64, -1 where there is no class (OOD)
    kind: str  # "id" (labelled digits) or "ood"
    shift: str = "none"  # none | ood | occlusion | adversarial | ...
    severity: str = ""
    group: str = ""  # OOD: near | far
    #: extra metric rows of this set for the model it was built against (fooling rate, generation seconds, ...)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalContext:
    """What building an eval set may need: the embedded data, a download dir, a size cap (smoke runs), the
    device, and a cache dir for artefacts that are expensive to make (e.g. universal perturbations per model)."""

    data_dir: Path = field(default_factory=lambda: Path("data"))
    max_eval: int = 0  # 0 = whole set
    max_attack: int = 0  # a further cap on the model-dependent sets (needs_model: attacks); 0 = none of its own
    allow_download: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path | None = None
    data: Any = None  # a user's dataset (datasets/user_data.py, --data); None = MNIST
    ood_resize: bool = False  # --ood-resize: user OOD sets of another shape are resized to the data's
    sets: Any = None  # the run's eval-set registry (EVAL_SETS plus its own sets); None = EVAL_SETS
    _cache: dict = field(default_factory=dict)

    def embedded(self, dataset: str, part: str) -> ImageSet:
        key = (dataset, part)
        if key not in self._cache:
            self._cache[key] = load_embedded(dataset, part)
        return self._cache[key]

    def id_part(self, part: str) -> ImageSet:
        """The in-distribution data's 'train' or 'test' part (the run's ``DataSource``; embedded MNIST without one)."""
        return self.data.part(part) if self.data is not None else self.embedded("mnist", part)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the in-distribution images."""
        return self.data.shape if self.data is not None else (1, 28, 28)

    @property
    def registry(self) -> Registry:
        return self.sets if self.sets is not None else EVAL_SETS

    def cap(self, n: int) -> int:
        return min(n, self.max_eval) if self.max_eval else n

    def for_attacks(self) -> EvalContext:
        """This context with ``max_attack`` folded into ``max_eval`` (the smaller cap wins), for building a
        model-dependent set; the copy shares the cache of embedded data and source models."""
        if not self.max_attack or (self.max_eval and self.max_eval <= self.max_attack):
            return self
        return replace(self, max_eval=self.max_attack)


@dataclass(frozen=True)
class EvalSetSpec:
    """``build(ctx)``, or ``build(ctx, method)`` when ``needs_model`` (adversarial sets attack each method's own
    classifier). A ``family`` (e.g. ``fgsm``) is registered once and named with parameters (``fgsm:eps=0.1``);
    ``build`` then also receives ``params`` (the text after the colon), and the bare family name expands to
    ``defaults``."""

    build: Callable[..., EvalData]
    offline: bool  # available without a network (embedded, synthetic or made from a model)
    needs_model: bool = False
    family: bool = False
    defaults: tuple[str, ...] = ()
    #: ``check(params)`` of a family: raises UsageError for bad parameters, else returns them parsed (with their
    #: defaults), so that bad or duplicate parameters are refused before any training (bench/run/validate.py)
    check: Callable[[str], object] | None = None
    #: the report table its rows go to (bench.report.groups): id, occlusion, adversarial, shift, ood-near, ood-far, ood,
    #: or a group of its own; '' = the group of the rows' shift family
    report_group: str = ""
    #: True for sets made at the in-distribution data's shape (noise, attacks, occlusion fractions), so they work
    #: on a user's --data; False (MNIST-only sets) are refused there with one line (datasets/user_data.py)
    any_shape: bool = False
    #: ``present(data_dir)`` of a set read from the user's data folder (notMNIST, OpenOOD's far-OOD folders): True
    #: when its files are there, which makes it one of the default eval sets
    present: Callable[[Path], bool] | None = None
    #: False for a set that is not offline but is never downloaded either (only read from the data folder)
    downloads: bool = True


EVAL_SETS: Registry = Registry("eval set")


def _register(name: str, description: str, offline: bool, report_group: str, any_shape: bool = False,
              present: Callable[[Path], bool] | None = None):
    def deco(fn: Callable[[EvalContext], EvalData]):
        EVAL_SETS.add(name, EvalSetSpec(fn, offline, report_group=report_group, any_shape=any_shape,
                                        present=present), description)
        return fn

    return deco


def _embedded_id(name: str, ctx: EvalContext) -> EvalData:
    """An embedded test set as the in-distribution set: only in a run trained on that dataset (its labels mean
    nothing to a classifier of another; as OOD it is ``ood:<name>``)."""
    trained_on = ctx.data.name if ctx.data is not None else "mnist"
    if trained_on != name:
        raise UsageError(f"eval set {name} is the in-distribution test set of the {name} benchmark, but this run is "
                         f"trained on {trained_on}; use ood:{name} to score it as OOD")
    test = ctx.embedded(name, "test")
    n = ctx.cap(len(test))
    return EvalData(name, test.images[:n], test.labels[:n], kind="id")


def _embedded_ood(name: str, dataset: str, ctx: EvalContext) -> EvalData:
    test = ctx.embedded(dataset, "test")
    n = ctx.cap(len(test))
    return EvalData(name, test.images[:n], torch.full((n,), -1), "ood", "ood", group="near")


@_register("mnist", "MNIST test set (10k), in-distribution (the mnist benchmark)", offline=True, report_group="id")
def _mnist(ctx: EvalContext) -> EvalData:
    return _embedded_id("mnist", ctx)


@_register("fashion", "Fashion-MNIST test set (10k), in-distribution (the fashion benchmark)", offline=True,
           report_group="id")
def _fashion_id(ctx: EvalContext) -> EvalData:
    return _embedded_id("fashion", ctx)


@_register("ood:fashion", "Fashion-MNIST test set (10k, embedded), near OOD", offline=True, report_group="ood-near")
def _fashion(ctx: EvalContext) -> EvalData:
    return _embedded_ood("ood:fashion", "fashion", ctx)


@_register("ood:mnist", "MNIST test set (10k, embedded), near OOD (for the fashion benchmark)", offline=True,
           report_group="ood-near")
def _mnist_ood(ctx: EvalContext) -> EvalData:
    return _embedded_ood("ood:mnist", "mnist", ctx)


def _noise(name: str, ctx: EvalContext, draw: Callable[[torch.Generator, tuple], torch.Tensor]) -> EvalData:
    n = ctx.cap(10_000)
    images = draw(torch.Generator().manual_seed(NOISE_SEED), (n, *ctx.shape)).clamp_(0, 1)
    return EvalData(name, images, torch.full((n,), -1), "ood", "ood", group="far")


@_register("ood:uniform", "Uniform noise images U[0,1] (10k, fixed seed), far OOD", offline=True,
           report_group="ood-far", any_shape=True)
def _uniform(ctx: EvalContext) -> EvalData:
    return _noise("ood:uniform", ctx, lambda g, s: torch.rand(s, generator=g))


@_register("ood:gaussian", "Gaussian noise images N(0.5, 0.25^2) clipped to [0,1] (10k, fixed seed), far OOD",
           offline=True, report_group="ood-far", any_shape=True)
def _gaussian(ctx: EvalContext) -> EvalData:
    return _noise("ood:gaussian", ctx, lambda g, s: 0.5 + 0.25 * torch.randn(s, generator=g))


def _torchvision_test(name: str, ctx: EvalContext, make: Callable[[str, bool], object], folder: str
                      ) -> object:
    root = Path(ctx.data_dir)
    try:
        return make(str(root), False)
    except (RuntimeError, FileNotFoundError):
        pass  # not on disk yet
    if not ctx.allow_download:
        raise DataError(f"{name} is not in {root} and downloads are off; place torchvision's {folder} files "
                        f"under {root}/ or allow downloads")
    try:
        return make(str(root), True)
    except Exception as e:  # urllib/http errors vary; all mean the same to the user
        raise DataError(f"{name} could not be downloaded ({type(e).__name__}); offline, place torchvision's "
                        f"{folder} files under {root}/ (--data-dir or BENCH_DATA)") from None


def _from_pil_dataset(ds, n: int, transform: Callable | None = None) -> torch.Tensor:
    import numpy as np

    imgs = []
    for i in range(n):
        img = ds[i][0]
        imgs.append(np.asarray(transform(img) if transform else img, dtype=np.uint8))
    return torch.from_numpy(np.stack(imgs)).unsqueeze(1)


@_register("ood:kmnist", "Kuzushiji-MNIST test set (downloaded via torchvision), near OOD", offline=False,
           report_group="ood-near")
def _kmnist(ctx: EvalContext) -> EvalData:
    from torchvision.datasets import KMNIST

    ds = _torchvision_test("ood:kmnist", ctx, lambda r, d: KMNIST(r, train=False, download=d), "KMNIST/raw")
    n = ctx.cap(len(ds))
    images = ds.data[:n].unsqueeze(1).to(torch.uint8)
    return EvalData("ood:kmnist", images, torch.full((n,), -1), "ood", "ood", group="near")


@_register("ood:emnist-letters", "EMNIST letters test set, transposed to MNIST orientation, near OOD",
           offline=False, report_group="ood-near")
def _emnist(ctx: EvalContext) -> EvalData:
    from torchvision.datasets import EMNIST

    ds = _torchvision_test("ood:emnist-letters", ctx,
                           lambda r, d: EMNIST(r, split="letters", train=False, download=d), "EMNIST/raw")
    n = ctx.cap(len(ds))
    images = ds.data[:n].transpose(1, 2).unsqueeze(1).to(torch.uint8)  # EMNIST is stored transposed
    return EvalData("ood:emnist-letters", images, torch.full((n,), -1), "ood", "ood", group="near")


@_register("ood:cifar10-grey", "CIFAR-10 test set, greyscale (ITU-R 601 luma), resized to 28x28, far OOD",
           offline=False, report_group="ood-far")
def _cifar(ctx: EvalContext) -> EvalData:
    from PIL import Image
    from torchvision.datasets import CIFAR10

    ds = _torchvision_test("ood:cifar10-grey", ctx, lambda r, d: CIFAR10(r, train=False, download=d),
                           "cifar-10-batches-py")
    n = ctx.cap(len(ds))
    images = _from_pil_dataset(ds, n, lambda im: im.convert("L").resize((28, 28), Image.BILINEAR))
    return EvalData("ood:cifar10-grey", images, torch.full((n,), -1), "ood", "ood", group="far")


@_register("ood:notmnist", "notMNIST test sample (10k glyphs A-J; from --data-dir, or downloaded), near OOD",
           offline=False, report_group="ood-near", present=notmnist.present)
def _notmnist(ctx: EvalContext) -> EvalData:
    return _glyphs("ood:notmnist", notmnist.load(ctx.data_dir, ctx.allow_download), ctx)


@_register("ood:notmnist-test", f"notMNIST less its last {notmnist.N_VAL:,} glyphs (the validation part of "
           "mdsens.val_ood=notmnist), near OOD", offline=False, report_group="ood-near", present=notmnist.present)
def _notmnist_test(ctx: EvalContext) -> EvalData:
    return _glyphs("ood:notmnist-test", notmnist.split(notmnist.load(ctx.data_dir, ctx.allow_download))[0], ctx)


def _glyphs(name: str, glyphs: ImageSet, ctx: EvalContext) -> EvalData:
    """notMNIST glyphs as a near-OOD set (capped by ``max_eval``)."""
    n = ctx.cap(len(glyphs))
    return EvalData(name, glyphs.images[:n], torch.full((n,), -1), "ood", "ood", group="near")


def offline_sets(sets: Registry | None = None) -> list[str]:
    """MNIST test plus every offline OOD set of ``sets`` (the registry's by default)."""
    sets = sets if sets is not None else EVAL_SETS
    return [n for n in sets.names() if sets.get(n).offline and not sets.get(n).family
            and (n == "mnist" or n.startswith("ood:"))]


def own_ood_sets(sets: Registry) -> list[str]:
    """A run's ``--ood`` sets (``ood:NAME``): those of its registry (datasets/source.py ``run_sets``) that are not
    built in, in the registry's (sorted) order."""
    return [n for n in sets.names() if n.startswith("ood:") and n not in EVAL_SETS]


def present_sets(data_dir: str | Path | None, sets: Registry | None = None) -> list[str]:
    """The sets read from the user's data folder whose files are already in ``data_dir`` (notMNIST, OpenOOD's
    far-OOD folders): they join a benchmark's default sets (never downloaded for a default run)."""
    sets = sets if sets is not None else EVAL_SETS
    return [n for n in sets.names() if data_dir is not None and sets.get(n).present is not None
            and sets.get(n).present(Path(data_dir))]


def lookup(name: str, sets: Registry | None = None) -> tuple[EvalSetSpec, str]:
    """(spec, params) of an eval-set name: an exact registered name, or ``family:params``."""
    sets = sets if sets is not None else EVAL_SETS
    if name in sets:
        return sets.get(name), ""
    family, sep, params = name.partition(":")
    if sep and family in sets and sets.get(family).family:
        spec = sets.get(family)
        if spec.check is not None:  # bad parameters are refused as soon as the name is read
            spec.check(params)
        return spec, params
    sets.get(name)  # raises with close matches
    raise AssertionError("unreachable")


def expand(patterns: list[str], sets: Registry | None = None) -> list[str]:
    """Names, wildcards and families (a bare family name means its default instances), without repeats."""
    sets = sets if sets is not None else EVAL_SETS
    out: list[str] = []
    for p in patterns:
        names = [p] if ":" in p and not any(c in p for c in "*?[") and p not in sets else sets.expand([p])
        for n in names:
            spec, _ = lookup(n, sets)
            for inst in (spec.defaults if spec.family and n in sets else (n,)):
                if inst not in out:
                    out.append(inst)
    return out


def build(name: str, ctx: EvalContext, method=None) -> EvalData:
    spec, params = lookup(name, ctx.registry)
    args = (ctx.for_attacks(), method) if spec.needs_model else (ctx,)
    return spec.build(*args, params) if spec.family else spec.build(*args)


def check(name: str, sets: Registry | None = None) -> object:
    """The parsed parameters of a family instance (raises UsageError when they are bad); the name otherwise."""
    spec, params = lookup(name, sets)
    return spec.check(params) if spec.family and spec.check is not None else name


def needs_model(name: str, sets: Registry | None = None) -> bool:
    return lookup(name, sets)[0].needs_model
