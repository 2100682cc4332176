"""Keep a leaderboard chunk's finished work in the repository, where the next sitting finds it (a session's disk does
not outlive it), and put it back into a run folder that `bench run --resume` continues and `bench report` reads.

    python tools/bank_chunk.py RUN [--bank results/fashion/runs]      # RUN = OUT_DIR/fashion-a -> .../fashion-a.tar.xz
    python tools/bank_chunk.py --restore results/fashion/runs OUT_DIR  # every banked chunk -> OUT_DIR/<name>/

Banked: the run's manifest, eval-set records, and for each *finished* unit (units/*.json with "finished") its unit
record, fitted records and cells (the rows, and the empty calibration cell); not the per-image predictions (about
0.8 MB per cell: gigabytes a world) nor the cache. A unit cut off in the middle is left out whole, so a resumed run
trains and scores it again from the start instead of mixing two trainings' cells. The banked chunk therefore holds
every row the tables need, and no input of `--versus` or `--plots`: report those while the predictions are on disk.

The archive holds JSON only and restoring reads it with tarfile's "data" filter (no links, no paths out of the
folder); a restored file that already exists with other content is refused rather than overwritten.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

BANK = Path("results/fashion/runs")
RUN_FILES = ("manifest.json", "checkpoints.json", "pauses.txt", "provenance.txt")


def _unit_prefixes(run: Path) -> tuple[list[Path], set[str]]:
    """The finished units' record files and the cell-name prefixes (method__seedS__foldF__) of their methods."""
    units, prefixes = [], set()
    for u in sorted((run / "units").glob("*.json")):
        rec = json.loads(u.read_text())
        if not rec.get("finished"):
            continue
        units.append(u)
        prefixes.update(f"{m}__seed{rec['seed']}__fold{rec['fold']}__" for m in rec["methods"])
    return units, prefixes


def members(run: Path) -> list[Path]:
    """The files of ``run`` that go into the bank, relative to it."""
    if not (run / "manifest.json").is_file():
        raise SystemExit(f"{run} is not a bench run folder (no manifest.json)")
    units, prefixes = _unit_prefixes(run)
    keep = [run / n for n in RUN_FILES if (run / n).is_file()]
    keep += sorted((run / "eval_sets").glob("*.json")) + units
    for sub in ("cells", "fitted"):
        keep += [p for p in sorted((run / sub).glob("*.json")) if any(p.name.startswith(x) for x in prefixes)]
    return [p.relative_to(run) for p in keep]


def bank(run: Path, dest: Path) -> Path:
    names = members(run)
    n_units = sum(1 for n in names if n.parts[0] == "units")
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{run.name}.tar.xz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for n in names:
            data = (run / n).read_bytes()
            info = tarfile.TarInfo(f"{run.name}/{n.as_posix()}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # the same files give the same archive
            tar.addfile(info, io.BytesIO(data))
    tmp = out.with_suffix(".xz.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    cells = sum(1 for n in names if n.parts[0] == "cells")
    print(f"banked {run}: {n_units} finished units, {cells} cells -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def restore(bank_dir: Path, out: Path) -> list[Path]:
    archives = sorted(bank_dir.glob("*.tar.xz"))
    if not archives:
        raise SystemExit(f"no banked chunks (*.tar.xz) in {bank_dir}")
    runs = []
    for a in archives:
        with tarfile.open(a, "r:xz") as tar:
            top = {m.name.split("/")[0] for m in tar.getmembers()}
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if (not m.isfile() or not m.name.endswith((".json", ".txt")) or len(top) != 1
                        or m.name.startswith("/") or ".." in parts or len(parts) < 2):
                    raise SystemExit(f"{a}: {m.name} is not a banked run file; the archive was not written here")
                target = out / m.name
                data = tar.extractfile(m).read()
                if target.exists():
                    if target.read_bytes() != data:
                        raise SystemExit(f"{target} exists and differs from {a}'s copy; move it away or restore "
                                         "into another folder")
                    continue
            tar.extractall(out, filter="data")
            runs.append(out / top.pop())
        print(f"restored {a} -> {runs[-1]}")
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", type=Path, help="the chunk's run folder (OUT_DIR/<world>-<chunk>)")
    ap.add_argument("--bank", type=Path, default=BANK, help=f"where the archives live (default {BANK})")
    ap.add_argument("--restore", nargs=2, type=Path, metavar=("BANK", "OUT_DIR"),
                    help="unpack every banked chunk of BANK into OUT_DIR/<name>/")
    args = ap.parse_args(argv)
    if args.restore:
        restore(*args.restore)
    elif args.run:
        bank(args.run, args.bank)
    else:
        ap.error("give a run folder to bank, or --restore BANK OUT_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
