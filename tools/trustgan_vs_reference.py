"""TrustGAN's whole epoch, ours against the reference code (ThalesGroup/trustGAN), side by side in one process.

Both train the original sizes (target net 7, attacker gan 5) for two epochs on the same data (the first TRAIN
MNIST training images, the next VAL as validation), batch 512, the first epoch target alone; the figure compared is
the second epoch (attacker steps on every batch), each implementation's whole epoch as it runs it: the reference's
epoch-start evaluation, its 3-step batches and its per-epoch saves; ours: the training steps and validation.

The reference runs unmodified from ``--ref`` (default third_party/trustgan-ref, a git-ignored copy of
ThalesGroup/trustGAN at c6211e1): its ``Training`` class is built on our data written in its ``X_*.pt`` /
``y_*.pt`` format and its ``train()`` is called; two of its methods are wrapped (not edited) to timestamp the epoch
start and end. Two runtime shims, no edits: ``torchsummaryX`` is stubbed when absent (used only with
``verbose=True``), and its plotting helper's ``np.nan_to_num(x, 0.0)`` (numpy < 2 positional form) gets ``nan=``.

    python tools/trustgan_vs_reference.py --device cuda --out trustgan-epoch.json
    python tools/trustgan_vs_reference.py --device cuda --compile none,reduce-overhead --out trustgan-epoch.json

``--compile`` trains ours once per mode (``trustgan.compile``): eager ours first, then the reference, then each
compiled mode, whose figures are prefixed ``ours_<mode>_``. A compiled mode trains three epochs, since its first
two carry the compilation (the attacker's functions are first called in the second); ``speedup_whole_epoch_<mode>``
compares its third epoch with the reference's second (both: attacker steps on every batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_epochs(ref: Path, data: dict[str, tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                     batch: int, work: Path) -> dict[str, float]:
    if "torchsummaryX" not in sys.modules:
        try:
            import torchsummaryX  # noqa: F401
        except ImportError:
            sys.modules["torchsummaryX"] = types.SimpleNamespace(summary=lambda *a, **k: None)
    sys.path.insert(0, str(ref / "py"))
    from trustgan import training as ref_training

    class _NumpyShim:  # numpy 2 reads nan_to_num's 2nd positional argument as `copy`
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def nan_to_num(x, nan=0.0):
            return np.nan_to_num(x, nan=nan)

    ref_training.np = _NumpyShim()
    dset = work / "ref-data"
    dset.mkdir()
    for part, (x, y) in data.items():
        torch.save(x.clone(), dset / f"X_{part}.pt")
        torch.save(y.clone(), dset / f"y_{part}.pt")
    tr = ref_training.Training(path_to_save=str(work / "ref-out"), path2dataset=str(dset), nb_classes=10,
                               device_name=str(device), batch_size=batch, num_epochs=2, nb_step_net_alone=1,
                               verbose=False, nb_channels=1)
    starts, ends = [], []

    def stamp(fn, into):
        def wrapped(*a, **k):
            if into is starts:
                _sync(device)
                into.append(time.perf_counter())
            out = fn(*a, **k)
            if into is ends:
                _sync(device)
                into.append(time.perf_counter())
            return out
        return wrapped

    tr.recover_from_nan_net = stamp(tr.recover_from_nan_net, starts)  # first call of every epoch
    tr.save_to_torch_full_model = stamp(tr.save_to_torch_full_model, ends)  # last call of every epoch
    t0 = time.perf_counter()
    tr.train()
    _sync(device)
    total = time.perf_counter() - t0
    return {"ref_epoch1_target_alone_s": ends[0] - starts[0], "ref_epoch2_whole_s": ends[1] - starts[1],
            "ref_total_s": total, "ref_net_params": sum(p.numel() for p in tr.net.parameters()),
            "ref_gan_params": sum(p.numel() for p in tr.gan.parameters())}


def our_epochs(train, val, device: torch.device, batch: int, compile: str = "none") -> dict[str, float]:
    import bench.methods  # noqa: F401  (registers everything)
    from bench.methods.core.base import FitContext
    from bench.methods.core.training import TrainRecipe
    from bench.methods.trustgan import TrustGAN, TrustGANConfig

    # compiled: a third epoch, since the attacker's functions are first called (compiled) in the second
    epochs = 2 if compile == "none" else 3
    cfg = TrustGANConfig(backbone="trustgan-net", net_size=7, gan_size=5, epochs=epochs, batch_size=batch,
                         val_every=1, gan_lr_schedule="none",  # the reference's effective constant attacker lr
                         compile=compile)
    ctx = FitContext(device=device, recipe=TrainRecipe(batch_size=batch, epochs=epochs))
    m = TrustGAN(cfg, seed=0).fit(train, val, ctx)
    log = m.train_log
    last = {} if epochs == 2 else {"ours_epoch3_whole_s": log.epoch_seconds[2] + log.val_seconds[2]}
    return {"ours_epoch1_target_alone_s": log.epoch_seconds[0] + log.val_seconds[0],
            "ours_epoch2_steps_s": log.epoch_seconds[1], "ours_epoch2_val_s": log.val_seconds[1],
            "ours_epoch2_whole_s": log.epoch_seconds[1] + log.val_seconds[1], **last,
            "ours_peak_mem_mb": log.peak_memory_mb, "ours_peak_mem_metric": log.peak_memory_metric,
            "ours_net_params": sum(p.numel() for p in m.model.parameters()),
            "ours_gan_params": sum(p.numel() for p in m.attacker.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--train", type=int, default=50_000, help="training images (default 50,000: 98 batches)")
    p.add_argument("--val", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--ref", type=Path, default=ROOT / "third_party" / "trustgan-ref")
    p.add_argument("--only", choices=["both", "ours", "reference"], default="both")
    p.add_argument("--compile", default="none", help="ours once per mode, comma-separated (none, default, "
                   "reduce-overhead)")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    a = p.parse_args()
    modes = a.compile.split(",")
    from bench.methods.core.training import COMPILE_MODES

    if not set(modes) <= set(COMPILE_MODES):
        sys.exit(f"error: --compile takes modes among {', '.join(COMPILE_MODES)}, got {a.compile!r}")
    if a.only != "ours" and not (a.ref / "py" / "trustgan" / "training.py").is_file():
        sys.exit(f"error: no reference code at {a.ref}; fetch ThalesGroup/trustGAN there (see tools/gpu-check.sh)")
    from bench.datasets.mnist import load_embedded

    device = torch.device(a.device)
    full = load_embedded("mnist", "train")
    train, val = full.subset(slice(0, a.train)), full.subset(slice(a.train, a.train + a.val))
    test = load_embedded("mnist", "test").subset(slice(0, a.val))
    fig: dict[str, object] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "train": a.train, "val": a.val, "batch": a.batch,
                              "batches_per_epoch": -(-a.train // a.batch)}

    def speedups() -> None:
        for mode in modes:
            key = "ours_epoch2_whole_s" if mode == "none" else f"ours_{mode}_epoch3_whole_s"
            if key in fig and "ref_epoch2_whole_s" in fig:
                name = "speedup_whole_epoch" if mode == "none" else f"speedup_whole_epoch_{mode}"
                fig[name] = fig["ref_epoch2_whole_s"] / fig[key]
        a.out.write_text(json.dumps(fig, indent=1))  # partial figures survive a later failure or timeout

    def ours(mode: str) -> None:
        figs = our_epochs(train, val, device, a.batch, mode)
        fig.update(figs if mode == "none" else {k.replace("ours_", f"ours_{mode}_", 1): v for k, v in figs.items()})
        speedups()

    # eager ours, then the reference, then the compiled modes (whose compilation may meet a time guard)
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in ("both", "ours") and "none" in modes:
            ours("none")
        if a.only in ("both", "reference"):
            data = {"train": (train.images, train.labels), "valid": (val.images, val.labels),
                    "test": (test.images, test.labels)}
            fig.update(reference_epochs(a.ref, data, device, a.batch, Path(tmp)))
            speedups()
        if a.only in ("both", "ours"):
            for mode in modes:
                if mode != "none":
                    ours(mode)
    a.out.write_text(json.dumps(fig, indent=1))
    print(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
