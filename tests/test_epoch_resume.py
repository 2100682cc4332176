"""An interrupted training continues from its last finished epoch (``EpochResume``, methods/core/training.py) and
ends with the weights, log and selection of an uninterrupted one; the checkpoint cache keeps that state in
``.partial/`` until the finished checkpoint replaces it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from _tiny import TINY, random_images, rows, tiny
from bench import faults
from bench.cache import CheckpointCache
from bench.datasets.mnist import ImageSet
from bench.methods.core.training import (
    EpochResume,
    Loop,
    TrainRecipe,
    fit_loop,
    forked_rng,
    new_classifier,
    supervised_step,
)

CPU = torch.device("cpu")
# momentum and a step schedule (optimiser and scheduler state), dropout (torch's stream), flips and crops (the
# batch-order generator), validation every epoch (the kept weights)
RECIPE = TrainRecipe(optimizer="sgd", lr=0.05, momentum=0.9, scheduler="step", step_size=1, gamma=0.5,
                     batch_size=16, epochs=3, augment="flip_crop4")


TRAIN, VAL = random_images(64, 1), random_images(32, 2)  # 4 batches an epoch


def _train(resume_cache: CheckpointCache | None, interrupt_at: int = 0, recipe: TrainRecipe = RECIPE,
           classes: int = 10, train: ImageSet = TRAIN):
    """lenet from seed 0 for the recipe's epochs; the ``interrupt_at``-th batch raises, as a Ctrl-C would."""
    with forked_rng(CPU):
        model, stepper = new_classifier("lenet", classes, 0, recipe, CPU, len(train))
        inner, calls = supervised_step(model, stepper), [0]

        def step(x, y, epoch):
            calls[0] += 1
            if calls[0] == interrupt_at:
                raise KeyboardInterrupt
            return inner(x, y, epoch)

        resume = EpochResume(resume_cache, "k", {"stepper": stepper}) if resume_cache is not None else None
        log = fit_loop(model, step, train, VAL, recipe, Loop(CPU, seed=0), resume=resume)
    return model, log, stepper, calls[0]


def test_an_interrupted_training_continues_to_the_uninterrupted_weights(tmp_path):
    ref_model, ref_log, ref_stepper, _ = _train(None)
    cache = CheckpointCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _train(cache, interrupt_at=10)  # epoch 3, second batch
    assert cache.get_partial("k")["epoch"] == 2  # epochs 1 and 2 were saved, the last one never is
    model, log, stepper, calls = _train(cache)
    assert calls == 4  # only epoch 3 ran again
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert log.losses == ref_log.losses and log.val_accuracy == ref_log.val_accuracy
    assert log.best_epoch == ref_log.best_epoch and len(log.epoch_seconds) == 3
    assert stepper.count == ref_stepper.count == 12
    assert stepper.opt.param_groups[0]["lr"] == ref_stepper.opt.param_groups[0]["lr"] == pytest.approx(0.05 / 8)
    cache.put("k", {"model": model.state_dict()})  # the finished checkpoint replaces the partial state
    assert cache.get_partial("k") is None and not cache.partial_path("k").exists()


def test_a_partial_state_of_another_layout_or_from_before_retrain_is_not_used(tmp_path):
    cache = CheckpointCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _train(cache, interrupt_at=6)
    assert CheckpointCache(tmp_path, ignore_existing=True).get_partial("k") is None  # --retrain: start afresh
    with forked_rng(CPU):
        model, stepper = new_classifier("lenet", 10, 0, RECIPE, CPU, len(TRAIN))
        with pytest.warns(UserWarning, match="ignoring its saved epoch"):
            fit_loop(model, supervised_step(model, stepper), TRAIN, VAL, RECIPE, Loop(CPU, seed=0),
                     resume=EpochResume(cache, "k", {"stepper": stepper, "other": stepper}))
    cache.partial_path("k").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="restarts from epoch 1"):
        assert cache.get_partial("k") is None


@pytest.mark.e2e
def test_a_run_killed_in_its_second_epoch_resumes_from_the_first(tmp_path):
    two = ["--set", "train.epochs=2"]
    code, _, err = tiny(tmp_path / "ref", tmp_path / "ref-cache", *two)
    assert code == 0, err
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, faults.ENV: "batch@6:KILL"}  # 4 batches an epoch: the second batch of epoch 2
    proc = subprocess.run([sys.executable, "-m", "bench", *TINY, *two, "--out", str(run), "--cache-dir", str(cache)],
                          env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == -9, proc.stderr[-2000:]
    (partial,) = (cache / ".partial").glob("*.pt")
    assert torch.load(partial, weights_only=True)["epoch"] == 1
    code, out, err = tiny(run, cache, *two, "--resume")
    assert code == 0, err
    assert "train lenet seed 0: continuing from epoch 2 of 2" in err  # with the per-epoch lines, on stderr
    assert rows(run) == rows(tmp_path / "ref")
    assert not list((cache / ".partial").glob("*.pt"))


# the trainings that opt in (distill's teacher and confidnet's classifier are baselines)
RESUMABLE = ("msp", "duq", "edl", "logitnorm", "cure", "sngp", "advtrain", "oodgan", "missingfeature", "distill",
             "confidnet", "trustgan", "swag")
OPTIONS = {"swag": {"swa_epochs": 2}}  # its SWA phase is half the run's epochs (1 of 3): one to save, one to resume


def test_every_method_that_trains_is_checked_here():
    """A method added with a training of its own must opt in (and be listed above) or say here why not."""
    from bench.methods import METHODS
    from bench.methods.core.base import Training

    own = {n for n in METHODS.names() if METHODS.get(n).training is Training.OWN}
    assert own <= set(RESUMABLE), sorted(own - set(RESUMABLE))


@pytest.mark.parametrize("name", RESUMABLE)
def test_each_opted_in_method_resumes_to_its_uninterrupted_fit(name, tmp_path, monkeypatch):
    from bench.methods.core.base import FitContext

    recipe = TrainRecipe(batch_size=16, epochs=3)  # trustgan: epoch 1 is the target's alone, 2 trains its attacker

    def fit(cache_dir):
        from bench.methods import METHODS

        ctx = FitContext(recipe=recipe, split_id="resume-test", cache=CheckpointCache(cache_dir))
        config = METHODS.get(name).Config(**OPTIONS.get(name, {}))
        return ctx.fit_method(name, "lenet", 10, 0, TRAIN, VAL, config=config)

    count, stop_at = [0], [0]

    def hit(point):
        if point == "batch":
            count[0] += 1
            if count[0] == stop_at[0]:
                raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(faults, "hit", hit)
        ref_fit = fit(tmp_path / "ref")
        # the last training of the fit (the method's own, after any baseline or teacher), in its last epoch
        count[0], stop_at[0] = 0, count[0] - 2
        with pytest.raises(KeyboardInterrupt):
            fit(tmp_path / "c")
    ref = ref_fit.model.state_dict()
    assert len(list((tmp_path / "c" / ".partial").glob("*.pt"))) == 1
    got_fit = fit(tmp_path / "c")
    # the last epoch's loss shows a state that was not restored, even where the kept weights are an earlier epoch's
    assert got_fit.train_log.losses == ref_fit.train_log.losses and len(ref_fit.train_log.losses) >= 2
    got = got_fit.model.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert not list((tmp_path / "c" / ".partial").glob("*.pt"))


def test_a_state_that_fails_half_way_leaves_the_training_as_a_fresh_one(tmp_path):
    """lenet's convolutions fit a 10-class state, its last layer does not (5 classes): load_state_dict copies the
    first before it fails, and those copies must not survive into the fresh training."""
    recipe = TrainRecipe(batch_size=16, epochs=2)
    train5 = ImageSet(TRAIN.images, TRAIN.labels % 5)
    cache = CheckpointCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _train(cache, 6, recipe, classes=10, train=train5)
    fresh, fresh_log, _, _ = _train(None, recipe=recipe, classes=5, train=train5)
    with pytest.warns(UserWarning, match="ignoring its saved epoch"):
        model, log, _, _ = _train(cache, recipe=recipe, classes=5, train=train5)
    assert log.losses == fresh_log.losses
    for (name, a), b in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
