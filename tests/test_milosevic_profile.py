"""The milosevic profile (missing-feature reference protocol): the reference's SGD recipe, (almost) all 60k images
trained on, and the last epoch kept because only the last epoch is validated."""

from __future__ import annotations

import copy

import torch

from bench.config import load_profile, resolve
from bench.datasets.splits import SplitSpec, smallest_train_size, split_indices
from bench.methods import METHODS
from bench.methods.core.training import Loop, Stepper, TrainRecipe, fit_loop, supervised_step


def test_profile_is_the_reference_recipe():
    cfg = resolve([load_profile("milosevic")], {n: METHODS.get(n).Config for n in METHODS.names()})
    t, mf = cfg.train, cfg.options_for("missingfeature")
    assert cfg.backbone == "lenet"
    assert (t.optimizer, t.lr, t.momentum, t.batch_size, t.epochs, t.scheduler) == ("sgd", 0.1, 0.5, 64, 10, "none")
    assert t.val_every > t.epochs  # only the last epoch is validated, so it is the one kept
    assert (mf["epochs"], mf["lr"], mf["momentum"], mf["batch_size"]) == (10, 0.1, 0.5, 64)
    # 0.0001 of 60,000 = 6 images held out: 59,994 trained on
    assert smallest_train_size(60_000, 1, cfg.split.val_fraction, 0) == 59_994
    train, val = split_indices(60_000, SplitSpec(cfg.split.val_fraction, cfg.split.split_seed))
    assert (len(train), len(val)) == (59_994, 6)


def test_val_every_above_epochs_keeps_the_last_epoch(tiny):
    train, val = tiny[0].subset(slice(0, 128)), tiny[1].subset(slice(0, 32))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    recipe = TrainRecipe(optimizer="sgd", lr=0.5, batch_size=32, epochs=3, val_every=1000)
    states = {}
    log = fit_loop(model, supervised_step(model, Stepper(list(model.parameters()), recipe, 4)), train, val, recipe,
                   Loop(torch.device("cpu"), 0),
                   after_epoch=lambda e: states.__setitem__(e, copy.deepcopy(model.state_dict())))
    assert list(log.val_accuracy) == [3] and log.best_epoch == 3
    assert not torch.equal(states[2]["1.weight"], states[3]["1.weight"])  # the epochs did change the weights
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[3][k])
