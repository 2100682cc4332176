"""The models a page serves, and the "fool, collect, retrain" rounds.

Round 0 of a method is the run's own checkpoint (``checkpoints.json``). ``retrain`` fine-tunes the method's latest
round on the run's MNIST training split plus every example collected so far and stores the result as round n+1:
its checkpoint under ``<run>/dadc/checkpoints/`` (the cache format of ``ConfidenceMethod.checkpoint``) and its row
in the ``rounds`` table of ``dadc.sqlite``. ``bench serve`` then serves the latest round by default.

Oversampling: the human examples are few, so each is repeated ``copies`` times, the smallest number that makes
them at least ``human_fraction`` (default 5%) of every fine-tuning epoch:
``copies = ceil(human_fraction / (1 - human_fraction) * n_mnist / n_human)``.

Only methods whose network is the plain cross-entropy classifier and whose confidence needs no learned state
(they do not override ``_fit`` or ``extra_state``: msp, mcdropout, energy, maxlogit, entropy) can be fine-tuned
this way; for the others (their own training, a learned head or temperature, several networks) fine-tuning the
classifier alone would no longer be that method, so ``retrain`` refuses them with a one-line error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.cache import CheckpointCache
from bench.dadc.preprocess import from_png
from bench.dadc.store import DadcStore, Example
from bench.datasets.mnist import ImageSet, load_embedded
from bench.errors import UsageError
from bench.methods.core.base import ConfidenceMethod, Training
from bench.run.loading import _read_json, fitted_entries, load_method
from bench.utils import stable_hash

HUMAN_FRACTION = 0.05
LR_FACTOR = 0.1  # fine-tuning learning rate = the run's learning rate x this, unless --lr


@dataclass
class Served:
    """A fitted method as a page serves it, with the identity recorded next to each of its predictions."""

    method: str
    seed: int
    fold: int
    round: int
    model_key: str
    model: ConfidenceMethod


def round_checkpoints(run_dir: Path) -> CheckpointCache:
    return CheckpointCache(Path(run_dir) / "dadc" / "checkpoints")


def load_round(run_dir: str | Path, method: str, round_no: int | str = "latest", seed: int | None = None,
               fold: int = 0, device: torch.device | str = "cpu") -> Served:
    """``method`` of the run at round ``round_no`` (0 = the run's own checkpoint, "latest" = the newest round)."""
    run_dir = Path(run_dir)
    base = load_method(run_dir, method, seed=seed, fold=fold, device=device)
    entry = next(e for e in fitted_entries(run_dir) if e["method"] == method and e["seed"] == base.seed
                 and e["fold"] == fold)
    rounds = [r for r in DadcStore(run_dir).rounds(method) if r["seed"] == base.seed and r["fold"] == fold]
    if round_no == "latest":
        row = rounds[-1] if rounds else None
    elif int(round_no) == 0:
        row = None
    else:
        row = next((r for r in rounds if r["round"] == int(round_no)), None)
        if row is None:
            raise UsageError(f"{method} has no dadc round {round_no} in {run_dir} (it has: "
                             f"{', '.join(str(r['round']) for r in rounds) or 'only round 0'})")
    if row is None:
        return Served(method, base.seed, fold, 0, entry["key"], base)
    hit = round_checkpoints(run_dir).get(row["model_key"])
    if hit is None:
        raise UsageError(f"checkpoint {row['checkpoint']} of {method} round {row['round']} is missing or unreadable")
    return Served(method, base.seed, fold, int(row["round"]), row["model_key"], base.load_checkpoint(hit, device))


def served_methods(run_dir: str | Path, round_no: int | str = "latest", seed: int | None = None,
                   device: torch.device | str = "cpu") -> list[Served]:
    """Every method fitted in the run (fold 0, the smallest seed unless ``seed``), at ``round_no`` where it has
    that round (round 0 otherwise)."""
    names = sorted({e["method"] for e in fitted_entries(run_dir) if e["fold"] == 0})
    if not names:
        raise UsageError(f"run {run_dir} has no fitted methods (checkpoints.json is empty)")
    store, out = DadcStore(run_dir), []
    for name in names:
        has = round_no in ("latest", 0, "0") or any(r["round"] == int(round_no) for r in store.rounds(name))
        out.append(load_round(run_dir, name, round_no if has else 0, seed=seed, device=device))
    return out


def example_tensors(examples: list[Example]) -> ImageSet:
    """uint8 (N, 1, 28, 28) images and int64 labels of stored examples."""
    if not examples:
        return ImageSet(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    images = torch.from_numpy(np.stack([from_png(e.image_png) for e in examples])).unsqueeze(1)
    return ImageSet(images, torch.tensor([e.label for e in examples], dtype=torch.long))


def finetune_refusal(method: ConfidenceMethod) -> str | None:
    """Why ``method`` cannot be fine-tuned generically (None if it can)."""
    cls = type(method)
    if cls.training is not Training.SHARED_BASELINE:
        return f"{cls.name} trains its own way (it overrides _fit), so plain cross-entropy fine-tuning would not be " \
               f"{cls.name} any more"
    if cls.extra_state is not ConfidenceMethod.extra_state:
        return f"{cls.name} has learned state beyond the network (extra_state) that fine-tuning would leave stale"
    return None


def run_split(run_dir: Path, fold: int) -> tuple[ImageSet, ImageSet, dict[str, Any]]:
    """The run's MNIST training and validation parts (the split it trained on) and its resolved config."""
    from bench.config import SplitConfig
    from bench.datasets.splits import SplitSpec, split

    config = _read_json(Path(run_dir) / "manifest.json", "run")["config"]
    s = SplitConfig(**config.get("split", {}))  # the run's split, defaults from the one place that defines them
    spec = SplitSpec(s.val_fraction, s.split_seed, config.get("folds", 1), fold, s.max_train)
    train, val = split(load_embedded("mnist", "train"), spec)
    return train, val, config


def retrain(run_dir: str | Path, method: str, seed: int | None = None, epochs: int = 1, lr: float | None = None,
            human_fraction: float = HUMAN_FRACTION, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fine-tune ``method``'s latest round on MNIST train + every collected example; store and return round n+1."""
    from bench.methods.core.training import Loop, Stepper, TrainRecipe, fit_loop, supervised_step

    run_dir, device = Path(run_dir), torch.device(device)
    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    if not 0 < human_fraction < 1:
        raise UsageError(f"--human-fraction must be in (0, 1), got {human_fraction}")
    # the flag the user typed is checked first: a wrong --method is reported even before any example exists
    parent = load_round(run_dir, method, "latest", seed=seed, device=device)
    why = finetune_refusal(parent.model)
    if why:
        raise UsageError(f"cannot fine-tune {method}: {why}; dadc retrain supports methods that use the plain "
                         "baseline network (msp, mcdropout, energy, maxlogit, entropy)")
    store = DadcStore(run_dir)
    examples = store.examples()
    if not examples:
        raise UsageError(f"{store.path} holds no examples yet; flag some with: python -m bench serve --run {run_dir}")
    train, val, config = run_split(run_dir, parent.fold)
    human = example_tensors(examples)
    copies = math.ceil(human_fraction / (1 - human_fraction) * len(train) / len(human))
    data = ImageSet(torch.cat([train.images, human.images.repeat(copies, 1, 1, 1)]),
                    torch.cat([train.labels, human.labels.repeat(copies)]))
    recipe = TrainRecipe(**config.get("train", {}))
    recipe = dataclasses.replace(recipe, epochs=epochs, lr=lr if lr is not None else recipe.lr * LR_FACTOR)
    round_no = store.next_round(method)
    m = parent.model
    model = m._fitted_model()
    stepper = Stepper(model.parameters(), recipe, math.ceil(len(data) / recipe.batch_size))
    m.train_log = fit_loop(model, supervised_step(model, stepper), data.to(device), val.to(device), recipe,
                           Loop(device, parent.seed + 1000 * round_no, f"{method} dadc round {round_no}"))
    key = f"{method}-dadc-r{round_no}-" + stable_hash(
        {"parent": parent.model_key, "examples": [e.id for e in examples], "copies": copies, "recipe": recipe,
         "seed": parent.seed})
    m.baseline_key = key if m.posthoc else m.baseline_key  # the network a post-hoc scorer now scores
    cache = round_checkpoints(run_dir)
    cache.put(key, m.checkpoint())
    row = {"method": method, "round": round_no, "seed": parent.seed, "fold": parent.fold,
           "parent_key": parent.model_key, "model_key": key, "checkpoint": str(cache.path(key).relative_to(run_dir)),
           "examples_used": len(examples), "max_example_id": examples[-1].id, "human_copies": copies,
           "mnist_train": len(train), "epochs": epochs, "lr": recipe.lr}
    store.add_round(row)
    return row


def accuracy(method: ConfidenceMethod, data: ImageSet) -> float:
    if len(data) == 0:
        return float("nan")
    pred = method.predict(data.images).probs.argmax(1)
    return 100.0 * float((pred == data.labels).float().mean())


def round_table(run_dir: str | Path, method: str | None = None, max_eval: int = 0,
                device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """One row per (method, round): accuracy on MNIST test, on all collected examples, on the examples the round
    did not train on (flagged after it was made), and how often people fooled it while it was served."""
    run_dir = Path(run_dir)
    store = DadcStore(run_dir)
    names = sorted({e["method"] for e in fitted_entries(run_dir) if e["fold"] == 0})
    examples = store.examples() if store.exists() else []
    test = load_embedded("mnist", "test")
    if max_eval:
        test = test.subset(slice(0, max_eval))
    fooled = {(f["method"], f["round"]): f for f in store.fooled()}
    all_rounds = store.rounds(method)
    methods = [method] if method else names
    rows = []
    for name in methods:
        for r in [0] + [x["round"] for x in all_rounds if x["method"] == name]:
            served = load_round(run_dir, name, r, device=device)
            seen = next((x["max_example_id"] for x in all_rounds if x["method"] == name and x["round"] == r), 0)
            unseen = example_tensors([e for e in examples if e.id > seen])
            f = fooled.get((name, r), {"flagged": 0, "fooled": 0})
            rows.append({"method": name, "round": r, "model_key": served.model_key,
                         "trained_on": len([e for e in examples if e.id <= seen]),
                         "mnist_accuracy": accuracy(served.model, test),
                         "dadc_accuracy": accuracy(served.model, example_tensors(examples)), "dadc_n": len(examples),
                         "unseen_accuracy": accuracy(served.model, unseen), "unseen_n": len(unseen),
                         "flagged": f["flagged"], "fooled": f["fooled"]})
    return rows
