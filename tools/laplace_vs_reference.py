"""bench's ``laplace`` against laplace-torch (Daxberger et al.'s library) on the same trained last layer
(docs/bayesian-and-single-pass.md, "laplace").

Two steps, two environments (laplace-torch is not a bench dependency):

    python tools/laplace_vs_reference.py export OUT.pt [TRAIN_IMAGES]      (bench's venv)
    .venv-laplace/bin/python tools/laplace_vs_reference.py compare OUT.pt   (a venv with laplace-torch)

``export`` trains bench's lenet baseline (Adam 2e-3, batch 128, 2 epochs, seed 0) on the first TRAIN_IMAGES (default
10,000) MNIST training images, fits ``laplace`` on it and saves the training and test features (2,000 MNIST test
images), the last layer, bench's posterior covariance, prior precision and predictive. ``compare`` fits
``Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="full")`` on a one-layer model
holding the same (W, b) and the same features, tunes a scalar prior precision by marginal likelihood
(``optimize_prior_precision(method="marglik", prior_structure="scalar")``, its 100 Adam steps) and prints the
differences: posterior precision at bench's delta, delta itself, and the probit predictive.
"""

import sys

import torch


def export(out: str, n_train: int) -> None:
    import bench.methods  # noqa: F401  (registers the methods)
    from bench.datasets.mnist import load_embedded
    from bench.methods.core.base import FitContext
    from bench.methods.core.registry import METHODS
    from bench.methods.core.training import TrainRecipe, map_batches

    full, test = load_embedded("mnist", "train"), load_embedded("mnist", "test")
    train, val, test = full.subset(slice(0, n_train)), full.subset(slice(54000, 56000)), test.subset(slice(0, 2000))
    ctx = FitContext(recipe=TrainRecipe(optimizer="adam", lr=2e-3, batch_size=128, epochs=2))
    m = METHODS.get("laplace")(seed=0).fit(train, val, ctx)
    model = m.model
    f_train, y_train = map_batches(model.forward_features, model, train, ctx.device)
    f_test, y_test = map_batches(model.forward_features, model, test, ctx.device)
    pred = m.predict(test.images)
    torch.save({"f_train": f_train, "y_train": y_train, "f_test": f_test, "y_test": y_test,
                "w": m.state["w"], "b": m.state["b"], "sigma": m.state["sigma"],
                "delta": m.state["prior_precision"], "probs": pred.probs}, out)
    print(f"saved {out}: prior precision {float(m.state['prior_precision']):.6g}, "
          f"test accuracy {float((pred.probs.argmax(1) == y_test).float().mean()):.4f}")


def compare(path: str) -> None:
    from laplace import Laplace
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    d = torch.load(path)
    c, f = d["w"].shape
    net = nn.Sequential(nn.Flatten(), nn.Linear(f, c))
    with torch.no_grad():
        net[1].weight.copy_(d["w"])
        net[1].bias.copy_(d["b"])
    loader = DataLoader(TensorDataset(d["f_train"].float(), d["y_train"]), batch_size=512)
    la = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="full")
    la.fit(loader)
    # bench orders theta as (W | b) row by row: index c * (F+1) + i; laplace-torch as (vec W, b)
    perm = torch.tensor([cc * (f + 1) + i for cc in range(c) for i in range(f)] + [cc * (f + 1) + f for cc in range(c)])
    delta = float(d["delta"])
    la.prior_precision = delta
    ours = torch.linalg.inv(d["sigma"].double())[perm][:, perm]
    ref = la.posterior_precision.double()
    print(f"posterior precision at bench's delta: max |diff| {float((ours - ref).abs().max()):.3g} "
          f"(max entry {float(ref.abs().max()):.3g})")
    probs_ref = la(d["f_test"].float(), pred_type="glm", link_approx="probit")
    print(f"probit predictive at bench's delta: max |diff| {float((probs_ref - d['probs']).abs().max()):.3g}")
    la.prior_precision = 1.0
    la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit", prior_structure="scalar")
    ref_delta = float(la.prior_precision)
    print(f"prior precision by marginal likelihood: bench {delta:.6g}, laplace-torch {ref_delta:.6g} "
          f"(ratio {delta / ref_delta:.4f})")
    probs_ref = la(d["f_test"].float(), pred_type="glm", link_approx="probit")
    print(f"probit predictive, each with its own delta: max |diff| {float((probs_ref - d['probs']).abs().max()):.3g}, "
          f"mean max-prob bench {float(d['probs'].max(1).values.mean()):.4f} vs "
          f"{float(probs_ref.max(1).values.mean()):.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("export", "compare"):
        sys.exit(__doc__)
    if sys.argv[1] == "export":
        export(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10000)
    else:
        compare(sys.argv[2])
