"""The gallery's driver: checks the request before any work, then draws every section the run allows and says
what it skipped (``make_gallery``, called by ``bench gallery``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from bench.datasets import evalsets
from bench.errors import BenchError, UsageError
from bench.gallery.attacks import attack_rows, draw_attacks
from bench.gallery.config import SECTIONS, GalleryConfig, GalleryResult
from bench.gallery.dadc import draw_dadc
from bench.gallery.fooling import draw_fooling, fooling_rows
from bench.gallery.names import close_match
from bench.gallery.run_view import RunView
from bench.gallery.samples import draw_samples, sample_panel
from bench.gallery.targeted import draw_targeted, judge_rates, run_linf_radius, targeted_rows
from bench.gallery.trustgan import draw_trustgan, trustgan_samples
from bench.gallery.uap import draw_uap, uap_rows


def check_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("bench gallery needs matplotlib: pip install -e '.[plots]'") from None


def check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".gallery-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to --out {out_dir}: {e.strerror or e}; choose another --out") from None


def make_gallery(run_dir: str | Path, out_dir: str | Path, cfg: GalleryConfig = GalleryConfig(),
                 log: Callable[[str], None] | None = None) -> GalleryResult:
    """Writes every picture the run allows into ``out_dir``; what it cannot draw goes to ``skipped`` (one line
    each). Bad input (no run, unknown names, unwritable folder) raises UsageError before any work."""
    t0 = time.perf_counter()
    check_available()
    for s in cfg.sections:
        if s not in SECTIONS:
            raise UsageError(f"unknown gallery section {s!r}; {close_match(s, list(SECTIONS))}choose from "
                             f"{', '.join(SECTIONS)}")
    if not 1 <= cfg.digits <= 10:
        raise UsageError(f"--digits {cfg.digits} must be between 1 and 10")
    if not 0 <= cfg.target_index < 10_000:
        raise UsageError(f"--target-index {cfg.target_index} is outside the MNIST test set (0..9999)")
    if not 0 <= cfg.targeted_eps <= 1:  # written so that nan is refused too; inf would clip every pixel
        raise UsageError(f"--targeted-eps {cfg.targeted_eps} must be in [0, 1] (pixel units; 0 = the run's radius)")
    if cfg.targeted_steps < 1 or cfg.judge_images < 1:
        raise UsageError("--targeted-steps and --judge-images must be >= 1")
    view = RunView(Path(run_dir), cfg)
    if cfg.judge and cfg.judge not in view.methods:
        have = list(dict.fromkeys(r["method"] for r in view.rows))
        if cfg.judge not in have:
            raise UsageError(f"--judge {cfg.judge!r} is not a method of run {view.dir}; {close_match(cfg.judge, have)}"
                             f"it has: {', '.join(have)}")
    out = Path(out_dir)
    check_out_dir(out)
    res = GalleryResult()
    run_id = str(view.manifest.get("run_id", view.dir.name))
    say = log or (lambda s: None)

    def attempt(what: str, fn: Callable[[], list[Path]]) -> None:
        try:
            paths = fn()
        except UsageError:
            raise
        except BenchError as e:
            res.skipped.append(str(e))
            return
        res.written.extend(paths)
        for p in paths:
            say(f"wrote {p}")

    families = {s: s.partition(":")[0] for s in view.eval_sets}
    model_free = [s for s in view.eval_sets if not evalsets.needs_model(s)]
    if "samples" in cfg.sections:
        for s in model_free:
            attempt(f"samples {s}", lambda s=s: draw_samples(sample_panel(view, s), run_id, view.seed, out))
    wants_models = {"attacks", "targeted", "uap", "fooling", "trustgan"} & set(cfg.sections)
    networks = view.networks() if wants_models else []
    for name, reason in view.load_errors.items():
        res.skipped.append(f"{name}: no pictures that need its network ({reason})")
    if wants_models and not networks:
        res.skipped.append("attacks, targeted, uap, fooling, trustgan: no method of the run could be loaded "
                           "from its checkpoints")
    elif networks:
        if "attacks" in cfg.sections:
            white = [s for s in view.eval_sets if families[s] in ("fgsm", "pgd")]
            if not white:
                res.skipped.append("attacks: the run has no white-box set (fgsm:eps=E or pgd:eps=E)")
            for s in white:
                def _attacks(s=s):
                    idx, labels, rows = attack_rows(view, s, cfg.digits)
                    return draw_attacks(s, labels, rows, run_id, view.seed, out)
                attempt(f"attacks {s}", _attacks)
        if "targeted" in cfg.sections:
            def _targeted():
                eps = cfg.targeted_eps or run_linf_radius(view)
                x, label, rows = targeted_rows(view, cfg, eps)
                if cfg.judge:
                    rates = judge_rates(view, cfg.judge, eps, cfg.targeted_steps, cfg.judge_images)
                    for r in rows:
                        r.judge_rate = rates.get(r.network)
                        if r.judge_rate is not None:
                            res.notes.append(f"targeted PGD eps {eps:g}: {cfg.judge} labels {r.judge_rate:.1f}% "
                                             f"of {r.network}'s targeted results as the target")
                return draw_targeted(x, label, rows, eps, cfg.targeted_steps, cfg.judge, cfg.judge_images,
                                     run_id, view.seed, cfg.target_index, out)
            attempt("targeted", _targeted)
        if "uap" in cfg.sections:
            uaps = [s for s in view.eval_sets if families[s] == "uap"]
            if not uaps:
                res.skipped.append("uap: the run has no universal perturbation set (uap:xi=..,p=..)")
            for s in uaps:
                def _uap(s=s):
                    label, rows = uap_rows(view, s)
                    return draw_uap(s, label, rows, run_id, view.seed, out)
                attempt(f"uap {s}", _uap)
        if "fooling" in cfg.sections:
            fool = [s for s in view.eval_sets if families[s] == "fooling"]
            if not fool:
                res.skipped.append("fooling: the run has no fooling set")
            for s in fool:
                attempt(f"fooling {s}", lambda s=s: draw_fooling(s, fooling_rows(view, s), run_id, view.seed, out))
        if "trustgan" in cfg.sections:
            gans = [n for n in networks if getattr(n.method, "attacker", None) is not None]
            if not gans:
                res.skipped.append("trustgan: no selected method has a saved attacker (trustgan)")
            else:
                attempt("trustgan", lambda: draw_trustgan([(n.label, *trustgan_samples(n.method)) for n in gans],
                                                          run_id, view.seed, out))
    if "dadc" in cfg.sections:
        attempt("dadc", lambda: draw_dadc(view, out))
    res.seconds = time.perf_counter() - t0
    return res
