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
from bench.methods.core.backbones import create_backbone
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import TrainLog


@dataclass(frozen=True)
class EnsembleConfig(Options):
    members: int = option(5, ge=1)  # M, as in Lakshminarayanan et al.


class MeanProbEnsemble(nn.Module):
    """images -> log of the mean of the members' softmax probabilities (N, C)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([m(x).log_softmax(1) for m in self.members])  # (M, N, C)
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


@register("ensemble", "Deep ensemble of M baseline seeds (s..s+M-1); MCP of the mean softmax")
class Ensemble(ConfidenceMethod):
    Config = EnsembleConfig
    training = Training.FROZEN_BASELINE
    grid_weight = 0.15  # scheduling hint, in baseline trainings: its members are usually cached by then (distill)
    #: 1: the log is TrainLog.concat of the members' (best_epoch: the last member's, counted over all epochs;
    #: before: member 0's in its own numbering)
    training_version = 1

    @property
    def member_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.config.members)]

    @property
    def forward_passes(self) -> int:
        return self.config.members

    def build_model(self) -> nn.Module:
        return MeanProbEnsemble([create_backbone(self.backbone, self.num_classes, shape=self.shape)
                                 for _ in self.member_seeds])

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        members, logs, keys = [], [], []
        for s in self.member_seeds:
            model, log, key = ctx.train_baseline(self.backbone, self.num_classes, s, train, val)
            members.append(model)
            logs.append(log)
            keys.append(key)
        self.model = MeanProbEnsemble(members).to(ctx.device)
        self.train_log = TrainLog.concat(logs)  # members trained in turn: the cost is their sum
        self.baseline_key = ",".join(keys)
