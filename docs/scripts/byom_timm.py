"""Evidence for docs/byom.md: a timm model, trained one epoch on CPU by plain PyTorch code (not by bench), scored
with bench.evaluate. timm's ``forward_features`` / ``forward_head`` give trust score and ConfidNet their features.

    python docs/scripts/byom_timm.py [--model test_resnet] [--train 12000] [--max-eval 2000] [--out DIR]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
import torch.nn.functional as F

import bench
from bench.datasets.mnist import load_embedded

# no mcdropout: timm's resnets apply their head dropout functionally (no nn.Dropout module to switch on), and
# bench.evaluate refuses mcdropout on such a model with one line
METHODS = ["msp", "energy", "maxlogit", "entropy", "temperature", "trustscore", "confidnet"]
SETS = ["mnist", "ood:fashion", "ood:uniform", "ood:gaussian", "fgsm:eps=0.1", "pmnist:horizontal"]
SHOW = ["accuracy", "auroc", "aupr_error", "ece", "ood_auroc", "robust_accuracy"]


def train_one_epoch(model: torch.nn.Module, n: int, seed: int = 0) -> float:
    data = load_embedded("mnist", "train").subset(slice(0, n))
    x, y = data.images.float() / 255.0, data.labels
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for idx in torch.randperm(len(x), generator=g).split(128):
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - t0


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--max-eval", type=int, default=2000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(a.model, num_classes=10, in_chans=1, drop_rate=0.2)
    secs = train_one_epoch(model, a.train)
    print(f"{a.model}: {sum(q.numel() for q in model.parameters())} params, one epoch over {a.train} images in "
          f"{secs:.1f} s (CPU, {torch.get_num_threads()} threads)", flush=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    rows = bench.evaluate(model, methods=METHODS, datasets=SETS, device="cpu", out=a.out, names=a.model,
                          options={"eval.max_eval": a.max_eval, "split.max_train": 10000, "confidnet.head_epochs": 2})
    print(f"bench.evaluate: {time.perf_counter() - t0:.1f} s; parameters unchanged: "
          f"{all(torch.equal(before[k], v) for k, v in model.state_dict().items())}; mode restored to train: "
          f"{model.training}")
    table = rows[rows.metric.isin(SHOW)].pivot_table(index="method", columns=["eval_set", "metric"], values="value")
    with __import__("pandas").option_context("display.width", 250, "display.max_columns", 40):
        print(table.round(2).to_string())


if __name__ == "__main__":
    cli()
