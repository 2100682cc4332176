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

One file per picture (``samples``, ``attacks``, ``targeted``, ``uap``, ``fooling``, ``trustgan``, ``dadc``: what it
selects or regenerates, and how it draws it), on top of ``run_view`` (what is read from the run: rows, saved
predictions, fitted methods grouped by network), ``draw`` (panels and the PNG/PDF writer), ``names``, ``config``;
``make`` checks the request and draws every section (``make_gallery``, what ``bench gallery`` calls).
"""

from bench.gallery.attacks import AttackRow, attack_rows, draw_attacks, first_distinct
from bench.gallery.config import SECTIONS, GalleryConfig, GalleryResult
from bench.gallery.dadc import draw_dadc
from bench.gallery.fooling import FoolingRow, draw_fooling, fooling_rows
from bench.gallery.make import check_available, check_out_dir, make_gallery
from bench.gallery.names import safe_name
from bench.gallery.run_view import Network, RunView
from bench.gallery.samples import SamplePanel, draw_samples, sample_indices, sample_panel
from bench.gallery.targeted import (
    TargetedRow,
    draw_targeted,
    judge_rates,
    run_linf_radius,
    targeted_pgd,
    targeted_rows,
)
from bench.gallery.trustgan import draw_trustgan, trustgan_samples
from bench.gallery.uap import UapRow, draw_uap, uap_rows

__all__ = [
    "SECTIONS", "AttackRow", "FoolingRow", "GalleryConfig", "GalleryResult", "Network", "RunView", "SamplePanel",
    "TargetedRow", "UapRow", "attack_rows", "check_available", "check_out_dir", "draw_attacks", "draw_dadc",
    "draw_fooling", "draw_samples", "draw_targeted", "draw_trustgan", "draw_uap", "first_distinct", "fooling_rows",
    "judge_rates", "make_gallery", "run_linf_radius", "safe_name", "sample_indices", "sample_panel", "targeted_pgd",
    "targeted_rows", "trustgan_samples", "uap_rows",
]
