"""Benchmarks declared as data: which in-distribution data a benchmark trains and tests on, its eval-set groups, and
the profile it is meant for. ``bench run --benchmark NAME`` (default ``mnist``) runs a benchmark's default sets
(its in-distribution, near-OOD and far-OOD groups) unless ``--datasets`` says otherwise; ``bench list benchmarks``
shows them. A user's ``--data NAME=PATH`` is a benchmark made from the user's files (``for_source``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import Registry

#: the groups a benchmark may declare, in report order; the first three are run when --datasets is not given
GROUPS = ("id", "near", "far", "shift", "adversarial", "occlusion", "human")
DEFAULT_GROUPS = ("id", "near", "far")


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    data: str  # the embedded training data (datasets/source.py ``embedded``)
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (group, eval-set names or families), groups in GROUPS
    profile: str = "quick"

    def __post_init__(self) -> None:
        bad = [g for g, _ in self.groups if g not in GROUPS]
        if bad:
            raise ValueError(f"benchmark {self.name}: unknown group {bad[0]!r} (groups: {', '.join(GROUPS)})")

    def group(self, name: str) -> tuple[str, ...]:
        return dict(self.groups).get(name, ())

    def default_sets(self, sets=None, data_dir=None) -> list[str]:
        """Its in-distribution, near- and far-OOD sets that are available offline: embedded or synthetic, or read
        from the user's data folder and already there (a set that needs a download is named in the declaration and
        run when asked for with --datasets)."""
        from bench.datasets import evalsets

        names = [n for g in DEFAULT_GROUPS for n in self.group(g)]
        here = set(evalsets.present_sets(data_dir, sets))
        return [n for n in evalsets.expand(names, sets) if evalsets.lookup(n, sets)[0].offline or n in here]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _declare(b: Benchmark) -> None:
    BENCHMARKS.add(b.name, b, b.description)


_declare(Benchmark(
    "mnist", "MNIST digits: near OOD Fashion-MNIST (+ notMNIST from --data-dir; KMNIST, EMNIST letters when "
    "downloaded), far OOD noise (+ Texture, TinyImageNet, Places365 from --data-dir; CIFAR-10 grey when downloaded); "
    "shift MNIST-C; FGSM/PGD/UAP; Partial-MNIST occlusions; human-drawn digits (bench serve)",
    data="mnist",
    groups=(("id", ("mnist",)),
            ("near", ("ood:notmnist", "ood:fashion", "ood:kmnist", "ood:emnist-letters")),
            ("far", ("ood:uniform", "ood:gaussian", "ood:cifar10-grey", "ood:texture", "ood:tin", "ood:places365")),
            ("shift", ("mnistc",)),
            ("adversarial", ("fgsm", "pgd:eps=0.1", "uap:xi=0.2,p=inf", "fgsm-transfer", "fooling")),
            ("occlusion", ("pmnist", "occlusion:random-squares")),
            ("human", ("dadc",))),
    profile="quick"))

_declare(Benchmark(
    "fashion", "Fashion-MNIST clothing (about 91% accuracy: ~900 errors per 10k test images): near OOD MNIST "
    "(+ notMNIST from --data-dir), far OOD noise (+ Texture, TinyImageNet, Places365 from --data-dir); shift: the "
    "MNIST-C corruptions applied to Fashion-MNIST; FGSM/PGD/UAP; Partial occlusions",
    data="fashion",
    groups=(("id", ("fashion",)),
            ("near", ("ood:mnist", "ood:notmnist")),
            ("far", ("ood:uniform", "ood:gaussian", "ood:texture", "ood:tin", "ood:places365")),
            ("shift", ("mnistc",)),
            ("adversarial", ("fgsm", "pgd:eps=0.1", "uap:xi=0.2,p=inf", "fgsm-transfer", "fooling")),
            ("occlusion", ("pmnist", "occlusion:random-squares"))),
    profile="quick"))


def run_defaults(benchmark: str, source, sets=None, data_dir=None) -> list[str]:
    """The eval sets of a run without --datasets: its benchmark's default groups, or for a user's --data its test
    part plus every offline OOD set made at any shape (noise); with the run's --ood sets (in ``sets``) in both
    cases. The offline ones in the registry's (sorted) order, as runs listed them before benchmarks were declared,
    then those found in ``data_dir`` (notMNIST, OpenOOD's far-OOD folders)."""
    from bench.datasets import evalsets

    if source.is_user_data:
        return [source.name, *[n for n in evalsets.offline_sets(sets)
                               if n.startswith("ood:") and evalsets.lookup(n, sets)[0].any_shape]]
    own = evalsets.own_ood_sets(sets) if sets is not None else []
    declared = BENCHMARKS.get(benchmark).default_sets(sets, data_dir)
    offline = sorted({n for n in declared if evalsets.lookup(n, sets)[0].offline} | set(own))
    return [*offline, *[n for n in declared if n not in offline]]
