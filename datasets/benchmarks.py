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

    def default_sets(self, sets=None) -> list[str]:
        """Its in-distribution, near- and far-OOD sets that are available offline (a set that needs a download
        is named in the declaration and run when asked for with --datasets)."""
        from bench.datasets import evalsets

        names = [n for g in DEFAULT_GROUPS for n in self.group(g)]
        return [n for n in evalsets.expand(names, sets) if evalsets.lookup(n, sets)[0].offline]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _declare(b: Benchmark) -> None:
    BENCHMARKS.add(b.name, b, b.description)


_declare(Benchmark(
    "mnist", "MNIST digits: near OOD Fashion-MNIST (+ KMNIST, EMNIST letters when downloaded), far OOD noise "
    "(+ CIFAR-10 grey); shift MNIST-C; FGSM/PGD/UAP; Partial-MNIST occlusions; human-drawn digits (bench serve)",
    data="mnist",
    groups=(("id", ("mnist",)),
            ("near", ("ood:fashion", "ood:kmnist", "ood:emnist-letters")),
            ("far", ("ood:uniform", "ood:gaussian", "ood:cifar10-grey")),
            ("shift", ("mnistc",)),
            ("adversarial", ("fgsm", "pgd:eps=0.1", "uap:xi=0.2,p=inf", "fgsm-transfer", "fooling")),
            ("occlusion", ("pmnist", "occlusion:random-squares")),
            ("human", ("dadc",))),
    profile="quick"))


def run_defaults(benchmark: str, source, sets=None) -> list[str]:
    """The eval sets of a run without --datasets: its benchmark's default groups, or for a user's --data its test
    part plus every offline OOD set made at any shape (noise); with the run's --ood sets (in ``sets``) in both
    cases. In the registry's (sorted) order, as runs listed them before benchmarks were declared."""
    from bench.datasets import evalsets

    own = [n for n in evalsets.offline_sets(sets) if n.startswith("ood:") and n not in evalsets.EVAL_SETS]
    if source.is_user_data:
        return [source.name, *[n for n in evalsets.offline_sets(sets)
                               if n.startswith("ood:") and evalsets.lookup(n, sets)[0].any_shape]]
    return sorted(set(BENCHMARKS.get(benchmark).default_sets(sets)) | set(own))
