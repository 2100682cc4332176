"""Time training steps of lenet5 with the openood recipe beside lenet with the quick recipe, in one process.

    python tools/time_openood_epoch.py [--steps 30] [--threads 1]

Prints ms per step (a batch of 128: augmentation, forward, backward, update, scheduler) and that times the
batches of bench's 54k training split (422) as seconds per epoch, validation excluded. Both nets are timed in the
same process one after the other, so that the ratio holds on a loaded machine whose absolute times do not.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from bench.methods.core.backbones import create_backbone
from bench.methods.core.training import Stepper, TrainRecipe, augment_batch, generator, supervised_step, training_layout

BATCHES = math.ceil(54_000 / 128)
RECIPES = {
    "lenet (quick)": ("lenet", TrainRecipe(optimizer="adam", lr=2e-3, scheduler="cosine", epochs=6)),
    "lenet5 (openood)": ("lenet5", TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                                               weight_decay=5e-4, scheduler="cosine_iter", augment="flip_crop4",
                                               epochs=100)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for label, (backbone, recipe) in RECIPES.items():
        torch.manual_seed(0)
        model = create_backbone(backbone)
        step = supervised_step(model, Stepper(model.parameters(), recipe, BATCHES))
        order = generator(0)
        with training_layout(model, torch.device("cpu")):
            model.train()
            for _ in range(3):  # warm-up
                step(augment_batch(x, recipe.augment, order), y, 1)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(augment_batch(x, recipe.augment, order), y, 1)
            per_step = (time.perf_counter() - t) / args.steps
        print(f"{label}: {1000 * per_step:.1f} ms/step, {per_step * BATCHES:.1f} s/epoch ({BATCHES} batches)")


if __name__ == "__main__":
    main()
