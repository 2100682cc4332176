"""DUQ's Fashion-MNIST recipe (issue #34 fidelity): the duq-cnn backbone against the reference's layer list
(utils/cnn_duq.py) and the duq profile against train_duq_fm.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.config import load_profile, resolve
from bench.datasets.splits import SplitSpec, split_indices
from bench.methods import METHODS
from bench.methods.core.backbones import create_backbone
from bench.methods.core.training import Stepper
from bench.methods.duq import DUQModel


def test_backbone_is_the_reference_cnn():
    torch.manual_seed(0)
    net = create_backbone("duq-cnn").eval()
    # conv 1->64 (3x3, pad 1), 64->128 (pad 1), 128->128 (no pad), each with batch norm; fc 512->256; head 256->10
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in (net.conv1, net.conv2, net.conv3)] == \
        [(1, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1)), (128, 128, (3, 3), (0, 0))]
    assert (net.fc1.in_features, net.fc1.out_features, net.num_features) == (512, 256, 256)
    # 640 + 128 + 73,856 + 256 + 147,584 + 256 + 131,328 weights and BN affine terms, + 2,570 for the softmax head
    assert sum(p.numel() for p in net.parameters()) == 356_618
    x = torch.rand(3, 1, 28, 28)
    h = (x - 0.2861) / 0.3530  # the reference's Fashion-MNIST Normalize
    h = F.max_pool2d(F.relu(net.bn1(net.conv1(h))), 2)  # 28 -> 14
    h = F.max_pool2d(F.relu(net.bn2(net.conv2(h))), 2)  # 14 -> 7
    h = F.max_pool2d(F.relu(net.bn3(net.conv3(h))), 2)  # 7 -> 5 -> 2
    assert h.shape == (3, 128, 2, 2)
    feats = F.relu(net.fc1(h.flatten(1)))
    torch.testing.assert_close(net.forward_features(x), feats)
    torch.testing.assert_close(net(x), net.fc(feats))


def test_duq_head_on_it_has_the_reference_shapes():
    model = DUQModel(create_backbone("duq-cnn"), num_classes=10, embedding=256, length_scale=0.1)
    assert model.W.shape == (256, 10, 256)  # the reference's W: (embedding, classes, 256 features)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_profile_is_the_reference_recipe():
    cfg = resolve([load_profile("duq")], {n: METHODS.get(n).Config for n in METHODS.names()})
    t = cfg.train
    assert (cfg.benchmark, cfg.backbone) == ("fashion", "duq-cnn")
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size, t.epochs) == ("sgd", 0.05, 0.9, 1e-4, 128, 30)
    duq = cfg.options_for("duq")
    assert not duq  # duq's own defaults are the paper's: sigma 0.1, gamma 0.999, lambda 0.05, E 256
    defaults = METHODS.get("duq").Config()
    assert (defaults.length_scale, defaults.gamma, defaults.lam, defaults.embedding) == (0.1, 0.999, 0.05, 256)
    # MultiStepLR([10, 20], 0.2): lr 0.05 in epochs 1-10, 0.01 in 11-20, 0.002 in 21-30
    stepper = Stepper([torch.nn.Parameter(torch.zeros(1))], t, n_batches=2)
    lrs = []
    for _ in range(t.epochs):
        lrs.append(stepper.opt.param_groups[0]["lr"])
        for _ in range(2):
            stepper(stepper.params[0].sum())
    assert [round(v, 6) for v in (lrs[0], lrs[9], lrs[10], lrs[19], lrs[20], lrs[29])] == \
        [0.05, 0.05, 0.01, 0.01, 0.002, 0.002]
    # 5,000 of the 60,000 training images held out, as the reference's 55,000 / 5,000
    train, val = split_indices(60_000, SplitSpec(data="fashion-train", val_fraction=cfg.split.val_fraction))
    assert (len(train), len(val)) == (55_000, 5_000)


def test_docs_paper_recipe_table_is_the_committed_run(tmp_path):
    """The measured table in docs/bayesian-and-single-pass.md (`duq` at the paper's recipe) is
    results/duq-paper/results.csv rounded as `bench report` renders it, and the banked run, restored and loaded as
    `bench report` loads it, holds the same rows."""
    import pandas as pd
    from _tools import TOOLS, load_tool

    from bench.report.runs import load_run

    root = TOOLS.parent
    csv = pd.read_csv(root / "results/duq-paper/results.csv")
    value = {(m, ds, k): v for m, ds, k, v in zip(csv["method"], csv["eval_set"], csv["metric"], csv["value"])}
    doc = (root / "docs/bayesian-and-single-pass.md").read_text()
    table = doc.split("| method on `duq-cnn` |", 1)[1].split("\n\n", 1)[0]
    keys = [("fashion", "accuracy"), ("fashion", "auroc"), ("fashion", "ece"), ("ood:mnist", "ood_auroc"),
            ("ood:mnist", "ood_fpr95"), ("ood:notmnist", "ood_auroc"), ("ood:notmnist", "ood_fpr95")]
    checked = 0
    for method in ("duq", "msp"):
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {method} |"))
        cells = [c.replace("*", "").strip() for part in line.strip("|").split("|")[1:] for c in part.split("/")]
        assert len(cells) == len(keys), line
        for (eval_set, metric), cell in zip(keys, cells):
            assert float(cell) == round(value[(method, eval_set, metric)], 2), (method, eval_set, metric, cell)
            checked += 1
    assert checked == 14
    (run,) = load_tool("bank_chunk").restore(root / "results/duq-paper", tmp_path)
    rows, manifest = load_run(run)  # refuses a partial run
    assert {(m, ds, k): v for m, ds, k, v in zip(rows["method"], rows["eval_set"], rows["metric"], rows["value"])} \
        == value
    config = manifest["config"]
    assert (config["backbone"], config["benchmark"], config["train"]["epochs"]) == ("duq-cnn", "fashion", 30)
