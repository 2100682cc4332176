"""The in-distribution data of a run as one value, and the run's own eval sets.

The driver resolves the data once (``resolve``) into a ``DataSource``: its name (the in-distribution eval set), shape,
classes, the name the train/validation split and every checkpoint key use, its content identity, and how to load its
parts. The value is small and picklable: it travels to ``--jobs`` and Ray workers, which load the parts themselves
(once per process). Embedded MNIST is one instance of it, a user's ``--data NAME=PATH`` another; nothing else in a
run asks which.

A run's eval sets are the built-in registry plus the sets only that run has (the test part of a user's data, its
``--ood`` folders): ``run_sets`` makes that registry as a copy, so no module-level registry changes after import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.datasets.mnist import ImageSet, load_embedded
from bench.errors import UsageError
from bench.registry import Registry

MNIST_SHAPE = (1, 28, 28)
_PARTS: dict[tuple[str, str, str], ImageSet] = {}  # per process: (kind, ref, part) -> images, loaded once


@dataclass(frozen=True)
class DataSource:
    """What a run's in-distribution data is: ``name`` (its test part's eval set), ``shape`` (C, H, W),
    ``num_classes``, ``split_name`` (what the split and so every checkpoint key name), ``identity`` (content: an
    embedded set's name, a user's data sha256) and where its images come from (``kind``, ``ref``)."""

    name: str
    kind: str  # embedded | files
    ref: str  # the embedded dataset ("mnist") or the --data argument NAME=PATH
    shape: tuple[int, int, int]
    num_classes: int
    split_name: str
    identity: str
    spec: Any = None  # a user's data: its DataSpec (datasets/user_data.py), what the manifest records

    def part(self, part: str) -> ImageSet:
        """The 'train' part (what the train/validation split divides) or the 'test' part, loaded once per process."""
        key = (self.kind, self.ref, part)
        if key not in _PARTS:
            if self.kind == "embedded":
                _PARTS[key] = load_embedded(self.ref, part)
            else:
                from bench.datasets import user_data

                data = user_data.load(self.ref)
                if data.spec.sha256 != self.identity:
                    raise UsageError(f"--data {self.ref}: the files changed while the run was going (content hash "
                                     f"{data.spec.sha256[:12]}, the run started on {self.identity[:12]}); rerun")
                _PARTS[key] = data.part(part)
        return _PARTS[key]

    @property
    def n_train(self) -> int:
        """Images of the training part (what the split divides), without loading them where it can."""
        if self.is_user_data:
            return self.spec.n_train
        from bench.datasets.idx import read_idx
        from bench.datasets.mnist import DATA_ROOT, FILES

        return len(read_idx(DATA_ROOT / FILES[self.ref]["train_labels"][0]))  # labels only: fast

    @property
    def is_user_data(self) -> bool:
        return self.spec is not None

    def describe(self) -> str:
        c, h, w = self.shape
        return f"{self.name} ({c}x{h}x{w}, {self.num_classes} classes)"


#: embedded datasets with a training part: their in-distribution eval set (the test part) is named as the dataset
EMBEDDED = ("mnist", "fashion")


def embedded(name: str = "mnist") -> DataSource:
    """An embedded dataset with a training part (MNIST, Fashion-MNIST); MNIST's split name is the one its runs
    always had (so every checkpoint key of before is unchanged)."""
    if name not in EMBEDDED:
        raise UsageError(f"no embedded training data {name!r}; embedded: {', '.join(EMBEDDED)}")
    return DataSource(name=name, kind="embedded", ref=name, shape=MNIST_SHAPE, num_classes=10,
                      split_name=f"{name}-train", identity=name)


def from_files(text: str) -> DataSource:
    """A user's ``--data NAME=PATH`` (read, checked and hashed now: bad data fails before any work)."""
    from bench.datasets import user_data

    data = user_data.load(text)
    spec = data.spec
    return DataSource(name=spec.name, kind="files", ref=text, shape=spec.shape, num_classes=spec.num_classes,
                      split_name=spec.split_name, identity=spec.sha256, spec=spec)


def resolve(cfg: Any) -> DataSource:
    """The run's data: its ``--data``, else the embedded training data of its benchmark."""
    text = getattr(cfg, "data", "")
    if text:
        return from_files(text)
    from bench.datasets.benchmarks import BENCHMARKS

    return embedded(BENCHMARKS.get(getattr(cfg, "benchmark", "mnist") or "mnist").data)


def run_sets(source: DataSource, ood: tuple[str, ...] | list[str] = ()) -> Registry:
    """The run's eval-set registry: the built-in sets, the test part of a user's data (named as the data) and the
    ``--ood`` sets (``ood:NAME``)."""
    from bench.datasets import user_data, user_ood
    from bench.datasets.evalsets import EVAL_SETS

    own: dict[str, tuple[Any, str]] = {}
    if source.is_user_data:
        if source.name in EVAL_SETS:
            raise UsageError(f"--data {source.name}=...: {source.name} is a built-in eval set; choose another NAME")
        own[source.name] = (user_data.id_set_spec(), "your --data test part, in-distribution")
    for name, spec in user_ood.specs(ood).items():
        if name in EVAL_SETS:
            raise UsageError(f"--ood {name[4:]}=...: {name} is a built-in eval set; choose another NAME")
        own[name] = (spec, "user OOD set (--ood)")
    return EVAL_SETS.extended(own)

