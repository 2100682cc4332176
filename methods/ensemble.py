"""Deep ensemble (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017) of M plainly trained baselines.

Seeding scheme: the ensemble of seed s is the M cached baseline classifiers of seeds s, s+1, ..., s+M-1 (same
backbone, recipe and split), each trained once by ``ctx.train_baseline`` and shared with every other method
(the msp baseline of seed s is member 0). Ensembles of neighbouring seeds therefore share M-1 members: across
seeds 0, 1, 2 their spread understates the spread of independent ensembles; say so when comparing.
We use the ensemble's plain-training variant (no adversarial training, no variance head), as the references
for classification benchmarks do.

Prediction: p(y|x) = mean of the members' softmaxes; confidence = its maximum (MCP).
``classifier`` is one differentiable module returning log(mean_m softmax_m(x)) (a log-probability, so
``softmax`` of it gives back the mean probabilities and cross-entropy on it is the NLL of the ensemble):
white-box attacks (FGSM, PGD, UAP) then attack the ensemble as a whole, not one member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.datasets.mnist import ImageSet
from bench.errors import UsageError
from bench.methods.backbones import create_backbone
from bench.methods.base import ConfidenceMethod, FitContext, register
from bench.methods.training import TrainLog


@dataclass(frozen=True)
class EnsembleConfig:
    members: int = 5  # M, as in Lakshminarayanan et al.

    def __post_init__(self) -> None:
        if self.members < 1:
            raise UsageError(f"ensemble.members must be >= 1, got {self.members}")


class MeanProbEnsemble(nn.Module):
    """images -> log of the mean of the members' softmax probabilities (N, C)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([m(x).log_softmax(1) for m in self.members])  # (M, N, C)
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def merge_logs(logs: list[TrainLog]) -> TrainLog:
    """One log for the whole ensemble: epochs of all members in sequence (total cost is their sum)."""
    out = TrainLog(device=logs[0].device, peak_memory_metric=logs[0].peak_memory_metric)
    for log in logs:
        out.epoch_seconds += log.epoch_seconds
        out.val_seconds += log.val_seconds
        out.losses += log.losses
        out.peak_memory_mb = max(out.peak_memory_mb, log.peak_memory_mb)
    out.best_epoch = logs[0].best_epoch
    out.val_accuracy = dict(logs[0].val_accuracy)
    out.extra = {"member_best_epoch": [float(log.best_epoch) for log in logs]}
    return out


@register("ensemble", "Deep ensemble of M baseline seeds (s..s+M-1); MCP of the mean softmax")
class Ensemble(ConfidenceMethod):
    Config = EnsembleConfig
    frozen_classifier = True  # members are baselines from ctx.train_baseline

    @property
    def member_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.config.members)]

    @property
    def forward_passes(self) -> int:
        return self.config.members

    def build_model(self) -> nn.Module:
        return MeanProbEnsemble([create_backbone(self.backbone, self.num_classes) for _ in self.member_seeds])

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        members, logs, keys = [], [], []
        for s in self.member_seeds:
            model, log, key = ctx.train_baseline(self.backbone, self.num_classes, s, train, val)
            members.append(model)
            logs.append(log)
            keys.append(key)
        self.model = MeanProbEnsemble(members).to(ctx.device)
        self.train_log = merge_logs(logs)
        self.baseline_key = ",".join(keys)
