"""``python -m bench predict --run RUN --method M IMAGES...``: predicted class and confidence of a fitted method of a
finished run, per image. IMAGES are image files (PNG, JPEG, ...; converted to grey 28x28), .npz files, IDX (.gz)
files or folders of images. ``--csv FILE`` also writes the table."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.commands.args import add_device
from bench.errors import UsageError
from bench.utils import atomic_write_text, resolve_device

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predicted class and confidence of a fitted method for your images")
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG...), .npz, IDX (.gz) files or folders")
    p.add_argument("--run", type=Path, required=True, help="a finished run directory (from bench run --out)")
    p.add_argument("--method", required=True, help="a method fitted in that run, e.g. trustgan")
    p.add_argument("--seed", type=int, help="which seed's model (default: the smallest fitted)")
    p.add_argument("--fold", type=int, default=0, help="which fold's model (default 0)")
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark digits on a light background)")
    p.add_argument("--csv", type=Path, help="also write the predictions to this CSV file")
    add_device(p)
    p.set_defaults(handler=run_predict)


def _read_one(path: Path) -> tuple[torch.Tensor, list[str]]:
    """uint8 (N, 1, 28, 28) images of one argument, with a label per image."""
    from bench.datasets.user_ood import read_images, to_grey28

    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        from bench.datasets.image_files import open_image

        with open_image(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.uint8)
        return to_grey28(grey[None], str(path)), [str(path)]
    images = read_images(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return images, [str(f) for f in files]
    return images, [f"{path}[{i}]" for i in range(len(images))]


def run_predict(args: argparse.Namespace, out: Console, err: Console) -> int:
    from bench.run.loading import load_method
    from bench.run.validate import check_file_writable

    device = resolve_device(args.device)
    if args.csv is not None:
        check_file_writable(args.csv, "--csv")
    from bench.run.loading import run_data

    data = run_data(args.run)
    if data is not None:  # predict reads images as 28x28 grey (MNIST); a --data run's model takes another shape
        raise UsageError(f"run {args.run} was made on your own data {data['name']} ({'x'.join(map(str, data['shape']))}"
                         "); bench predict reads MNIST-like images only: in Python, use "
                         "bench.run.loading.load_method(RUN, METHOD).predict(images)")
    parts = [_read_one(p) for p in args.images]  # the user's files first: cheap, and the likelier mistake
    method = load_method(args.run, args.method, seed=args.seed, fold=args.fold, device=device)
    images = torch.cat([p[0] for p in parts])
    names = [n for p in parts for n in p[1]]
    if args.invert:
        images = 255 - images
    pred = method.predict(images)
    conf, cls = pred.confidence.numpy(), pred.probs.argmax(1).numpy()
    prob = pred.probs.max(1).values.numpy()
    table = Table(title=f"{args.method} (seed {method.seed}, fold {args.fold}) on {len(names)} image(s)",
                  title_justify="left")
    for col in ("image", "class", "confidence", "max prob"):
        table.add_column(col, justify="left" if col == "image" else "right")
    rows = []
    for name, c, k, p in zip(names, cls, conf, prob):
        rows.append({"image": name, "predicted_class": int(c), "confidence": float(k),
                     "max_prob": float(p)})
        table.add_row(name, str(int(c)), f"{float(k):.4f}", f"{float(p):.4f}")
    out.print(table)
    if args.csv is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["image", "predicted_class", "confidence", "max_prob"],
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        try:
            atomic_write_text(args.csv, buf.getvalue())
        except OSError as e:
            raise UsageError(f"cannot write --csv {args.csv}: {e.strerror or e}") from None
        out.print(f"wrote {args.csv}", highlight=False)
    return 0
