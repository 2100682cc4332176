"""``attacks_<set>``: white-box sets (fgsm, pgd) regenerated on the run's checkpoints: clean, attacked and the
perturbation, per network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.datasets import evalsets
from bench.datasets.mnist import to_float
from bench.gallery.draw import RIGHT, WRONG, draw_image, draw_perturbation, pyplot, row_label, save_figure
from bench.gallery.names import eps_of, safe_name
from bench.gallery.run_view import RunView


def first_distinct(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first example of each of the first ``k`` distinct labels, in order of appearance."""
    seen: dict[int, int] = {}
    for i, y in enumerate(np.asarray(labels).tolist()):
        if y not in seen:
            seen[y] = i
            if len(seen) == k:
                break
    return np.array(list(seen.values()), dtype=int)


@dataclass
class AttackRow:
    network: str
    clean: np.ndarray  # (d, 28, 28)
    adv: np.ndarray
    pert: np.ndarray  # adv - clean
    clean_pred: list[tuple[int, float]]
    adv_pred: list[tuple[int, float]]
    agree: int  # regenerated adversarial predictions equal to the run's saved ones
    compared: int


def attack_rows(view: RunView, eval_set: str, digits: int) -> tuple[np.ndarray, np.ndarray, list[AttackRow]]:
    """Regenerates the white-box set ``eval_set`` on the first test images of ``digits`` distinct classes, per
    network, with the set's own builder (same attack, parameters and seed as the run)."""
    test = view.context().embedded("mnist", "test")
    n = view.context().cap(len(test))
    idx = first_distinct(test.labels[:n].numpy(), digits)
    small = view.context(max_eval=int(idx.max()) + 1)
    out = []
    for net in view.networks():
        data = evalsets.build(eval_set, small, net.method)
        clean = to_float(test.images[: len(data.labels)]).to(view.device)
        adv = data.images.to(view.device).float()
        pc = net.method.predict(clean[idx])
        pa = net.method.predict(adv[idx])
        saved = view.saved(net.methods[0], eval_set)
        agree = compared = 0
        if saved is not None and len(saved["probs"]) > idx.max():
            compared = len(idx)
            agree = int((saved["probs"][idx].argmax(1) == pa.probs.numpy().argmax(1)).sum())
        c, a = clean[idx].cpu().numpy()[:, 0], adv[idx].cpu().numpy()[:, 0]
        out.append(AttackRow(net.label, c, a, a - c,
                             [(int(p.argmax()), float(q)) for p, q in zip(pc.probs.numpy(), pc.confidence)],
                             [(int(p.argmax()), float(q)) for p, q in zip(pa.probs.numpy(), pa.confidence)],
                             agree, compared))
    return idx, test.labels[idx].numpy(), out


def draw_attacks(eval_set: str, labels: np.ndarray, rows: list[AttackRow], run_id: str, seed: int,
                 out_dir: Path) -> list[Path]:
    plt = pyplot()
    d = len(labels)
    eps = eps_of(eval_set) or max(float(np.abs(r.pert).max()) for r in rows) or 1.0
    fig, axes = plt.subplots(len(rows), 3 * d, figsize=(0.8 * 3 * d + 1.6, 1.0 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for i, r in enumerate(rows):
        for j in range(d):
            y = int(labels[j])
            pc, cc = r.clean_pred[j]
            pa, ca = r.adv_pred[j]
            draw_image(axes[i, 3 * j], r.clean[j], f"clean\n{pc} ({cc:.2f})", RIGHT if pc == y else WRONG)
            draw_image(axes[i, 3 * j + 1], r.adv[j], f"attacked\n{pa} ({ca:.2f})", RIGHT if pa == y else WRONG)
            im = draw_perturbation(axes[i, 3 * j + 2], r.pert[j], eps, "x_adv - x\n")
        row_label(axes[i, 0], r.network)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="x_adv - x (pixels in [0, 1])")
    fig.suptitle(f"White-box {eval_set} against each network: digits {', '.join(map(str, labels))}", fontsize=9)
    agree = sum(r.agree for r in rows)
    compared = sum(r.compared for r in rows)
    check = (f" On these images the regenerated attack gets the run's saved prediction {agree} of {compared} times."
             if compared else "")
    caption = (f"Run {run_id}, seed {seed}. Regenerated: the run saves predictions, not adversarial images, so the "
               f"attack was rerun on the run's checkpoints with the set's own code, parameters and seed.{check} "
               "Titles: predicted class (confidence), green = right, red = wrong. Perturbation colour scale "
               f"symmetric at +-{eps:g} (red = brighter, blue = darker). Methods sharing one network are one row.")
    return save_figure(fig, out_dir, f"attacks_{safe_name(eval_set)}", caption)
