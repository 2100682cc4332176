"""What a gallery is asked for (GalleryConfig) and what it reports back (GalleryResult), with the fixed numbers
every picture shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GALLERY_SEED = 24  # the fixed sample of each evaluation set
SAMPLE_SIZE = 10
TARGETED_STEPS = 40
DEFAULT_TARGETED_EPS = 0.3  # when the run has no L-inf attack set: the Madry MNIST radius advtrain trains at
SECTIONS = ("samples", "attacks", "targeted", "uap", "fooling", "trustgan", "dadc")


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
