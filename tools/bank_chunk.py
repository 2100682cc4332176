"""Keep a leaderboard chunk's finished work in the repository, where the next sitting finds it (a session's disk does
not outlive it), and put it back into a run folder that `bench run --resume` continues and `bench report` reads.

    python tools/bank_chunk.py RUN [--bank results/fashion/runs]      # RUN = OUT_DIR/fashion-a -> .../fashion-a.tar.xz
    python tools/bank_chunk.py --restore results/fashion/runs OUT_DIR  # every banked chunk -> OUT_DIR/<name>/
    python tools/bank_chunk.py --check OUT_DIR/fashion-a OUT_DIR/fashion-b ...  # the same MNIST-C images?

Banked: the run's manifest, eval-set records, and for each *finished* unit (units/*.json with "finished") its unit
record, fitted records and cells (the rows, and the empty calibration cell); not the per-image predictions (about
0.8 MB per cell: gigabytes a world). A unit cut off in the middle is left out whole, so a resumed run trains and
scores it again from the start instead of mixing two trainings' cells. The banked chunk therefore holds every row the
tables need, and no input of `--versus` or `--plots`: report those while the predictions are on disk.

Chunks may run on different machines, whose CPUs round differently (AVX2 and AVX-512 kernels): a network trained again
there is not the same network. So the bank also keeps, from the run's cache (OUT_DIR/cache, the script's), the plain
baselines (`baseline-*.pt`, about 90 kB each: the shared network of every seed and the fixed transfer-attack source),
which a restore puts back into that cache for the chunks still to run; and the content hashes of the MNIST-C sets the
chunk was scored on (`cache/mnistc/*.json`, 118 MB of images are not banked), which `--check` compares across the
chunks of a world.

The archive holds JSON, text and the baselines' .pt files only, and restoring reads it with tarfile's "data"
filter (no links, no paths out of the folder); a restored file that already exists with other content is refused
rather than overwritten.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

from bench.utils import atomic_write_bytes

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
    keep += sorted((run / "eval_sets").glob("*.json")) + units + sorted((run / "mnistc").glob("*.json"))
    for sub in ("cells", "fitted"):
        keep += [p for p in sorted((run / sub).glob("*.json")) if any(p.name.startswith(x) for x in prefixes)]
    return [p.relative_to(run) for p in keep]


def cache_members(cache: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) of the cache's plain baselines and MNIST-C hash records."""
    out = [(p, f"checkpoints/{p.name}") for p in sorted(cache.glob("baseline-*.pt"))]
    for p in sorted((cache / "mnistc").glob("*.json")):  # named by content: a later sitting's may differ
        out.append((p, f"mnistc/{p.stem}.{json.loads(p.read_text())['sha256'][:12]}.json"))
    return out


def bank(run: Path, dest: Path, cache: Path | None = None) -> Path:
    names = members(run)
    n_units = sum(1 for n in names if n.parts[0] == "units")
    files = [(run / n, n.as_posix()) for n in names]
    cache = run.parent / "cache" if cache is None else cache
    have = {n for _, n in files}
    files += [(p, n) for p, n in (cache_members(cache) if cache.is_dir() else []) if n not in have]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{run.name}.tar.xz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for path, name in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{run.name}/{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # the same files give the same archive
            tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buf.getvalue())
    cells = sum(1 for n in names if n.parts[0] == "cells")
    nets = sum(1 for _, n in files if n.startswith("checkpoints/"))
    print(f"banked {run}: {n_units} finished units, {cells} cells, {nets} baselines -> {out} "
          f"({out.stat().st_size / 1e6:.1f} MB)")
    return out


def _put_checkpoints(run: Path, cache: Path) -> int:
    """The banked baselines into the cache, where the chunks still to run find them (never over another file)."""
    put = 0
    for p in sorted((run / "checkpoints").glob("*.pt")):
        target = cache / p.name
        if target.exists():
            if target.read_bytes() != p.read_bytes():
                raise SystemExit(f"{target} differs from the banked {p}: this cache holds another training of it; "
                                 "use a fresh OUT_DIR")
            continue
        atomic_write_bytes(target, p.read_bytes())
        put += 1
    return put


def check(runs: list[Path]) -> list[str]:
    """Lines naming each MNIST-C set whose images (content hash) differ between the chunks; empty when all agree."""
    seen: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        for p in sorted((run / "mnistc").glob("*.json")):
            seen.setdefault(p.name.split(".")[0], {}).setdefault(json.loads(p.read_text())["sha256"], []).append(
                run.name)
    return [f"{name}: different images in " + " / ".join(", ".join(r) for r in by.values())
            for name, by in sorted(seen.items()) if len(by) > 1]


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
                net = len(parts) == 3 and parts[1] == "checkpoints" and m.name.endswith(".pt")
                if (not m.isfile() or not (m.name.endswith((".json", ".txt")) or net) or len(top) != 1
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
        nets = _put_checkpoints(runs[-1], out / "cache")
        print(f"restored {a} -> {runs[-1]}" + (f" ({nets} baselines into {out / 'cache'})" if nets else ""))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", type=Path, help="the chunk's run folder (OUT_DIR/<world>-<chunk>)")
    ap.add_argument("--bank", type=Path, default=BANK, help=f"where the archives live (default {BANK})")
    ap.add_argument("--restore", nargs=2, type=Path, metavar=("BANK", "OUT_DIR"),
                    help="unpack every banked chunk of BANK into OUT_DIR/<name>/")
    ap.add_argument("--check", nargs="+", type=Path, metavar="RUN",
                    help="compare the MNIST-C images (content hashes) the chunks were scored on")
    args = ap.parse_args(argv)
    if args.check:
        bad = check(args.check)
        print("\n".join(bad) if bad else f"the {len(args.check)} chunks were scored on the same MNIST-C images")
        return 1 if bad else 0
    if args.restore:
        restore(*args.restore)
    elif args.run:
        bank(args.run, args.bank)
    else:
        ap.error("give a run folder to bank, or --restore BANK OUT_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
