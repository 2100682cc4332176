"""bench gallery: the fixed samples, the regenerated attacks and their perturbation panels, files written, and
one-line errors for bad input. The run is a tiny real one (msp + energy share a network; 500 training images)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main
from bench.datasets.mnist import load_embedded, to_float
from bench.gallery import (
    SECTIONS,
    GalleryConfig,
    RunView,
    attack_rows,
    first_distinct,
    fooling_rows,
    make_gallery,
    sample_indices,
    sample_panel,
    targeted_pgd,
    uap_rows,
)

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


pytest.importorskip("matplotlib")

UAP = "uap:xi=0.2,p=inf,n=20,passes=1,budget=5"
SETS = f"mnist,ood:uniform,fgsm:eps=0.2,fooling:n=10,{UAP}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    rc = main(["run", "--profile", "smoke", "--methods", "msp,energy", "--datasets", SETS, "--device", "cpu",
               "--set", "split.max_train=500", "--set", "eval.max_eval=60", "--no-progress",
               "--out", str(root / "run"), "--cache-dir", str(root / "cache")])
    assert rc == 0
    return root / "run"


@pytest.fixture(scope="module")
def view(tiny_run):
    return RunView(tiny_run, GalleryConfig())


# ------------------------------------------------------------------------------------------- pure helpers
def test_sample_indices_one_seeded_example_per_class_and_deterministic():
    labels = np.array([3, 1, 3, 0, 1, 3, 0])
    idx = sample_indices(labels, k=10, seed=5)
    assert labels[idx].tolist() == [0, 1, 3]  # one per class, in class order
    assert np.array_equal(idx, sample_indices(labels, k=10, seed=5))
    # by hand: the same generator draws from each class's positions in class order
    rng = np.random.default_rng(5)
    expect = [rng.choice([3, 6]), rng.choice([1, 4]), rng.choice([0, 2, 5])]
    assert idx.tolist() == [int(e) for e in expect]
    ood = sample_indices(np.full(30, -1), k=4, seed=1)
    assert len(set(ood.tolist())) == 4 and ood.tolist() == sorted(ood.tolist())


def test_first_distinct_takes_the_first_example_of_each_new_label():
    assert first_distinct(np.array([7, 2, 7, 1, 0, 2]), 3).tolist() == [0, 1, 3]
    assert first_distinct(np.array([5, 5]), 3).tolist() == [0]


def test_targeted_pgd_steps_against_the_target_gradient_sign_and_stays_in_the_ball():
    # logits = (x0, x1): grad_x CE(., target 1) = (p0, -p0, 0, 0), so x moves by (-eps, +eps, 0, 0)
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    model = nn.Sequential(nn.Flatten(), lin).train()
    x = torch.full((1, 1, 2, 2), 0.5)
    one = targeted_pgd(model, x, torch.tensor([1]), eps=0.1, steps=1, step_size=0.1)
    assert torch.allclose(one.flatten(), torch.tensor([0.4, 0.6, 0.5, 0.5]))
    many = targeted_pgd(model, x, torch.tensor([1]), eps=0.1, steps=5, step_size=0.1)  # projected back
    assert torch.allclose(many, one)
    assert model.training  # mode restored


def test_command_module_lists_the_same_sections():
    from bench.commands import gallery as cmd

    assert cmd.SECTIONS == SECTIONS


# ------------------------------------------------------------------------------------------- grid contents
def test_sample_panel_is_the_saved_predictions_on_the_test_images_and_deterministic(tiny_run, view):
    panel = sample_panel(view, "mnist")
    assert np.array_equal(panel.indices, sample_panel(view, "mnist").indices)
    test = load_embedded("mnist", "test")
    assert np.array_equal(panel.images, to_float(test.images[panel.indices]).numpy()[:, 0])
    assert panel.labels.tolist() == test.labels[panel.indices].tolist() == sorted(panel.labels.tolist())
    with np.load(tiny_run / "predictions" / "msp__seed0__fold0__mnist.npz") as z:
        saved_pred = z["probs"][panel.indices].argmax(1)
    msp = dict((m, p) for m, p, _ in panel.rows)["msp"]
    assert np.array_equal(msp, saved_pred)


def test_attack_panel_is_fgsm_recomputed_by_hand_and_its_perturbation_is_the_difference(tiny_run, view):
    assert [n.methods for n in view.networks()] == [["msp", "energy"]]  # one shared network, one row
    idx, labels, rows = attack_rows(view, "fgsm:eps=0.2", 2)
    (row,) = rows
    test = load_embedded("mnist", "test")
    x = to_float(test.images[idx]).requires_grad_(True)
    model = view.networks()[0].method.classifier.eval()
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), test.labels[idx], reduction="sum"), x)
    expect = (x.detach() + 0.2 * grad.sign()).clamp(0, 1)[:, 0].numpy()
    assert np.allclose(row.adv, expect, atol=1e-6)
    assert np.array_equal(row.pert, row.adv - row.clean)
    assert np.abs(row.pert).max() <= 0.2 + 1e-6
    assert row.compared == 2 and row.agree == 2  # the run's saved predictions on the same images


def test_uap_panel_shows_the_perturbation_the_run_cached(tiny_run, view):
    from bench.datasets.uap import cache_path, parse

    _, (row,) = uap_rows(view, UAP)
    assert row.cached
    path = cache_path(tiny_run.parent / "cache", view.networks()[0].method.classifier, parse(UAP.split(":", 1)[1]))
    assert np.array_equal(row.v, torch.load(path, weights_only=True)["v"].numpy()[0, 0])
    assert row.fooling == view.metric("msp", UAP, "uap_fooling_rate")


def test_fooling_panel_regenerates_the_runs_images(tiny_run, view):
    (row,) = fooling_rows(view, "fooling:n=10")
    assert row.images.shape == (10, 28, 28) and row.compared == 10 and row.agree == 10


def test_gallery_writes_every_possible_picture_and_says_what_it_skipped(tiny_run, tmp_path):
    from PIL import Image

    res = make_gallery(tiny_run, tmp_path / "g", GalleryConfig(sections=("samples", "attacks", "targeted", "uap",
                                                                          "fooling", "trustgan", "dadc")))
    names = sorted(p.name for p in res.written)
    for stem in ("samples_mnist", "samples_ood_uniform", "attacks_fgsm_eps0.2", "targeted_pgd",
                 "uap_xi0.2_pinf_n20_passes1_budget5", "fooling_n10"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
        with Image.open(tmp_path / "g" / f"{stem}.png") as im:
            assert im.size[0] > 200 and im.size[1] > 100
    assert any(s.startswith("trustgan:") for s in res.skipped)
    assert any(s.startswith("dadc:") for s in res.skipped)


# ------------------------------------------------------------------------------------------- bad input
def _one_line_error(capsys, argv: list[str], needle: str, code: int = 2) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "g")
    _one_line_error(capsys, ["gallery", str(tmp_path / "nope"), "--out", out], "does not exist")
    _one_line_error(capsys, ["gallery", str(tiny_run), "--out", out, "--methods", "mps"], "did you mean msp")
    _one_line_error(capsys, ["gallery", str(tiny_run), "--out", out, "--datasets", "fgsm:eps=0.3"],
                    "eval set 'fgsm:eps=0.3' is not in run")
    _one_line_error(capsys, ["gallery", str(tiny_run), "--out", out, "--sections", "sample"], "did you mean samples")
    _one_line_error(capsys, ["gallery", str(tiny_run), "--out", out, "--judge", "cure"], "--judge 'cure'")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(capsys, ["gallery", str(tiny_run), "--out", str(blocker / "g")], "cannot write to --out")


def test_run_without_checkpoints_draws_the_samples_and_skips_the_rest(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints.json").unlink()
    assert main(["gallery", str(run), "--out", str(tmp_path / "g"), "--sections", "samples,attacks",
                 "--datasets", "mnist,fgsm:eps=0.2"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "g" / "samples_mnist.png").exists()
    assert not (tmp_path / "g" / "attacks_fgsm_eps0.2.png").exists()
    assert "skipped msp: no pictures that need its network (" in err and "checkpoints.json is missing" in err


def test_dadc_examples_are_drawn_with_the_stored_predictions(tiny_run, tmp_path):
    from _dadc import png_bytes
    from bench.dadc.store import DadcStore, ModelPrediction

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    store = DadcStore(run)
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 13:15] = 255
    for predicted in (1, 7):  # one right, one wrong
        store.add_example(png_bytes(img), 1, [ModelPrediction("msp", 0, 0, 0, "k", predicted, 0.9)])
    res = make_gallery(run, tmp_path / "g", GalleryConfig(sections=("dadc",)))
    assert [p.name for p in res.written] == ["dadc.png", "dadc.pdf"] and not res.skipped
    none = make_gallery(run, tmp_path / "h", GalleryConfig(methods=("energy",), sections=("dadc",)))
    assert none.skipped == ["dadc: none of the selected methods was shown on the examples"]


def test_trustgan_samples_are_the_attacker_output_mapped_to_pixels():
    from bench.gallery import trustgan_samples
    from bench.methods.trustgan_nets import Attacker

    class Fake:  # a fitted trustgan's two parts the gallery uses: its attacker and predict
        attacker = Attacker(1, 3)

        def predict(self, x):
            from bench.methods.core.base import Prediction

            probs = torch.full((len(x), 10), 0.1)
            return Prediction(probs, probs.max(1).values)

    images, preds = trustgan_samples(Fake(), n=3, seed=1)
    z = torch.rand((3, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expect = ((Fake.attacker.eval()(z) + 1) / 2).clamp(0, 1)[:, 0].numpy()
    assert np.allclose(images, expect) and preds == [(0, pytest.approx(0.1))] * 3
