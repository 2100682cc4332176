"""Where a grid's wall time went, per unit: when each unit ran, its wall seconds, and how much of it was training.

    python tools/grid_timeline.py RUN_DIR [--pause START:END ...]

Units come from the run's ``units/`` records (written by every executor since 2026-11-27). A run made before them
is read from its cell files' times instead, which only works for a sequential run: a unit is then taken to start
when the previous one wrote its last cell (the first one when the run's manifest says it was created). Training seconds
are the ``train_sec_total`` cost rows (the methods of a shared-baseline unit all report their baseline's, so the
unit counts it once); the rest of a unit's wall time is loading, evaluation and the cost cell. A method whose
network was trained in an earlier unit (trustscore reads the baseline, ensemble's members may be distill's
teacher) logs that training's seconds: its "rest" is then left blank. ``--pause`` (Unix
times) names an interval the run was stopped (SIGSTOP, to measure something else on an idle machine): its overlap
is subtracted from each unit's wall time and from the total, and the units it hit are marked (their own logged
training seconds include it).

The last lines sum the units' wall seconds (worker-seconds), in all and per seed: for a run resumed over several
sittings, whose first-start-to-last-end span includes the time between them, that sum divided by the number of workers
is the wall time of the same work done in one sitting (units cut off by a stop and redone count once).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path


def cell_rows(run: Path) -> dict[str, list[dict]]:
    out = {}
    for p in (run / "cells").glob("*.json"):
        rows = json.loads(p.read_text())
        out[p.stem] = rows if isinstance(rows, list) else rows.get("rows", [])
    return out


def train_seconds(cells: dict[str, list[dict]], methods: list[str], seed: int, fold: int) -> float:
    secs = [r["value"] for m in methods for r in cells.get(f"{m}__seed{seed}__fold{fold}__cost", [])
            if r.get("metric") == "train_sec_total"]
    return max(secs) if secs else float("nan")


def from_records(run: Path) -> list[dict]:
    units = []
    for p in sorted((run / "units").glob("*.json")):
        u = json.loads(p.read_text())
        units.append({"name": "+".join(u["methods"]) if len(u["methods"]) < 4 else
                      f"{u['methods'][0]} (+{len(u['methods']) - 1} on its baseline)",
                      "methods": u["methods"], "seed": u["seed"], "fold": u["fold"], "start": u["started"],
                      "end": u["finished"], "pid": u["pid"], "threads": u["threads"]})
    return units


def shared(method: str) -> bool:
    from bench.methods import METHODS
    from bench.run.grid import shares_baseline

    return shares_baseline(METHODS.get(method))


def from_cell_times(run: Path) -> list[dict]:
    """Sequential runs only: units in the order their cells were written."""
    files = sorted((run / "cells").glob("*.json"), key=os.path.getmtime)
    units: list[dict] = []
    # the manifest's own creation time: the file itself is rewritten during a run (eval-set groups)
    created = json.loads((run / "manifest.json").read_text())["created"]
    start = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    for p in files:
        method, seed, fold = p.stem.split("__")[:3]
        seed, fold = int(seed[4:]), int(fold[4:])
        t = os.path.getmtime(p)
        if units and units[-1]["seed"] == seed and units[-1]["fold"] == fold and method in units[-1]["methods"]:
            units[-1]["end"] = t
            continue
        if units and units[-1]["shared"] and shared(method) and (seed, fold) == (units[-1]["seed"], units[-1]["fold"]):
            units[-1]["methods"].append(method)  # the next method on the same baseline: one unit
            units[-1]["end"] = t
            continue
        prev_end = units[-1]["end"] if units else start
        units.append({"methods": [method], "seed": seed, "fold": fold, "start": prev_end, "end": t,
                      "shared": shared(method), "pid": None, "threads": None})
    for u in units:
        u["name"] = "+".join(u["methods"]) if len(u["methods"]) < 4 else \
            f"{u['methods'][0]} (+{len(u['methods']) - 1} on its baseline)"
    return units


def parse_pause(text: str) -> tuple[float, float]:
    """START:END in Unix seconds, or START,END as ISO-8601 times (UTC unless they name a zone)."""
    if "," in text:
        def seconds(t: str) -> float:
            d = datetime.fromisoformat(t.strip())
            return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()

        a, b = text.split(",", 1)
        return seconds(a), seconds(b)
    a, b = text.split(":", 1)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--pause", action="append", default=[], metavar="START,END",
                    help="an interval the run was stopped, as Unix seconds START:END or UTC times "
                         "2026-12-06T15:15:29,2026-12-06T15:29:41; subtracted from wall times. Also read, one per "
                         "line, from the run's pauses.txt when it has one")
    args = ap.parse_args()
    record = args.run / "pauses.txt"
    if record.is_file():
        args.pause += [ln.split("#")[0].strip() for ln in record.read_text().splitlines() if ln.split("#")[0].strip()]
    cells = cell_rows(args.run)
    units = from_records(args.run) if (args.run / "units").is_dir() else from_cell_times(args.run)
    if not units:
        raise SystemExit(f"{args.run}: no unit records and no cells")
    try:
        pauses = [parse_pause(p) for p in args.pause]
    except ValueError as e:
        raise SystemExit(f"a pause is START:END in Unix seconds or START,END in ISO-8601 times ({e}); "
                         f"see --help and {record}") from None

    def paused(a: float, b: float) -> float:
        return overlap(pauses, a, b)

    t0 = min(u["start"] for u in units)
    t1 = max(u["end"] for u in units)
    print("| unit | seed | starts at s | wall s | logged training s | rest s | process (threads) |")
    print("|:--|--:|--:|--:|--:|--:|:--|")
    for u in sorted(units, key=lambda u: u["start"]):
        train = train_seconds(cells, u["methods"], u["seed"], u["fold"])
        stop = paused(u["start"], u["end"])
        wall = u["end"] - u["start"] - stop
        proc = f"{u['pid']} ({u['threads']})" if u["pid"] else "driver"
        mark = f" (paused {stop:.0f} s)" if stop else ""
        rest = f"{wall - train:.0f}" if train <= wall else "-"  # trained (partly) in an earlier unit, or paused
        print(f"| {u['name']}{mark} | {u['seed']} | {u['start'] - t0 - paused(t0, u['start']):.0f} | {wall:.0f} | "
              f"{train:.0f} | {rest} | {proc} |")
    stop = paused(t0, t1)
    total = t1 - t0 - stop
    print(f"\nunits ran from first start to last end: {total:.0f} s = {total / 60:.1f} min"
          + (f" ({stop:.0f} s of pauses subtracted)" if stop else ""))
    busy, per_seed = worker_seconds(units, pauses)
    workers = concurrency(units)
    print(f"unit wall seconds summed (worker-seconds): {busy:.0f} s = {busy / 3600:.2f} h; per seed: "
          + ", ".join(f"{s} {v:.0f} s" for s, v in sorted(per_seed.items())))
    print(f"divided by the {workers} unit(s) that ran at once at most: {busy / workers / 3600:.2f} h")


def concurrency(units: list[dict]) -> int:
    """The most units running at the same time (the workers of the run; a resumed run's new processes are not more)."""
    events = sorted([(u["start"], 1) for u in units] + [(u["end"], -1) for u in units], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return max(most, 1)


def overlap(pauses: list[tuple[float, float]], a: float, b: float) -> float:
    """Seconds of [a, b] that fall in the pauses (intervals assumed disjoint)."""
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in pauses)


def worker_seconds(units: list[dict], pauses: list[tuple[float, float]]) -> tuple[float, dict[int, float]]:
    """The units' wall seconds (less the pauses) summed, in all and per seed."""
    per_seed: dict[int, float] = {}
    for u in units:
        wall = u["end"] - u["start"] - overlap(pauses, u["start"], u["end"])
        per_seed[u["seed"]] = per_seed.get(u["seed"], 0.0) + wall
    return sum(per_seed.values()), per_seed


if __name__ == "__main__":
    main()
