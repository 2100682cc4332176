"""The chunked leaderboard runs: tools/leaderboard_chunks.txt covers every method and seed once per world, and
tools/bank_chunk.py keeps a run's finished units (not a cut-off one) so that a restored folder resumes with nothing
to compute and reports the same tables."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from _tools import TOOLS, load_tool

from _tiny import run_main


@pytest.fixture(scope="module")
def tool():
    return load_tool("bank_chunk")


def test_chunks_cover_every_method_and_seed_once():
    from bench.methods import METHODS

    seen: dict[str, list[tuple[str, int]]] = {}
    for line in (TOOLS / "leaderboard_chunks.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, world, methods, seeds = line.split()
        assert world in ("mnist", "fashion"), line
        seen.setdefault(world, []).extend((m, int(s)) for m in methods.split(",") for s in seeds.split(","))
    assert set(seen) == {"fashion"}
    for world, cells in seen.items():
        assert len(cells) == len(set(cells)), f"{world}: a method and seed in two chunks"
        assert set(cells) == {(m, s) for m in METHODS.expand(["*"]) for s in range(5)}, world


def _smoke(out: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(["run", "--profile", "smoke", "--methods", "msp,energy", "--seeds", "0,1", "--datasets",
                     "mnist,ood:gaussian", "--device", "cpu", "--no-progress", "--jobs", "1",
                     "--set", "split.max_train=300", "--set", "eval.max_eval=100", "--set", "eval.cost_images=50",
                     "--set", "eval.conformal=true", "--out", str(out), "--cache-dir", str(cache), *extra])


def test_bank_restore_resume_report(tool, tmp_path):
    run, cache = tmp_path / "out" / "fashion-z", tmp_path / "cache"
    code, _, err = _smoke(run, cache)
    assert code == 0, err
    # seed 1's unit as if cut off: its record has no end time, so none of its cells may be banked
    cut = next(u for u in (run / "units").glob("*.json") if json.loads(u.read_text())["seed"] == 1)
    rec = json.loads(cut.read_text())
    rec.pop("finished")
    cut.write_text(json.dumps(rec))
    # the hash record of an MNIST-C set the chunk was scored on (a real run writes it beside the cached images)
    (cache / "mnistc").mkdir()
    (cache / "mnistc" / "fashion-fog-v1-s2019.json").write_text(json.dumps({"sha256": "ab" * 32}))
    archive = tool.bank(run, tmp_path / "bank", cache)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not any("predictions" in n for n in names)
    assert any("msp__seed0__fold0__mnist.json" in n for n in names)
    assert not any("seed1" in n for n in names), "a cut-off unit's cells were banked"
    nets = sorted(p.name for p in cache.glob("baseline-*.pt"))
    assert len(nets) == 2 and all(f"fashion-z/checkpoints/{n}" in names for n in nets)  # seeds 0 and 1
    assert "fashion-z/mnistc/fashion-fog-v1-s2019.abababababab.json" in names

    restored = tool.restore(tmp_path / "bank", tmp_path / "next")
    assert restored == [tmp_path / "next" / "fashion-z"]
    again = restored[0]
    for n in nets:  # the baselines are back in the script's cache (OUT_DIR/cache), byte for byte
        assert (tmp_path / "next" / "cache" / n).read_bytes() == (cache / n).read_bytes()
    # the next sitting resumes the restored folder: seed 0 is done, seed 1 is scored anew on the banked baseline
    code, out, err = _smoke(again, tmp_path / "next" / "cache", "--resume", "--set", "executor.refit=false")
    assert code == 0, err
    assert "resumed" in out and " 0 cells computed" not in out
    assert "epoch 1" not in out + err  # nothing trained again: seed 1 read its banked baseline
    # a finished unit is not fitted again for want of its checkpoint (the default --resume would, for predict)
    fitted = json.loads((run / "checkpoints.json").read_text())
    assert not (tmp_path / "next" / "cache" / f"{fitted['energy__seed0__fold0']['key']}.pt").exists()
    assert (tmp_path / "next" / "cache" / f"{fitted['energy__seed1__fold0']['key']}.pt").exists()
    before = sorted((run / "cells").glob("*.json"))
    assert [p.name for p in before] == [p.name for p in sorted((again / "cells").glob("*.json"))]
    for p in before:  # seed 0 restored byte for byte; seed 1 recomputed to the same rows (timings apart)
        if "seed0" in p.name:
            assert p.read_bytes() == (again / "cells" / p.name).read_bytes()
    code, a, err = run_main(["report", str(run), "--groups", "id,ood-*", "--format", "csv"])
    assert code == 0, err
    code, b, err = run_main(["report", str(again), "--groups", "id,ood-*", "--format", "csv"])
    assert code == 0, err
    assert a == b


def test_restore_refuses_what_it_must_not_write(tool, tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    with tarfile.open(bank / "x.tar.xz", "w:xz") as tar:
        info = tarfile.TarInfo("x/manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    (tmp_path / "out" / "x").mkdir(parents=True)
    (tmp_path / "out" / "x" / "manifest.json").write_text("[]")
    with pytest.raises(SystemExit, match="exists and differs"):
        tool.restore(bank, tmp_path / "out")
    (bank / "x.tar.xz").unlink()
    for bad in ("y/predictions/a.npz", "y/../../escape.json", "/abs/manifest.json", "manifest.json"):
        with tarfile.open(bank / "y.tar.xz", "w:xz") as tar:
            info = tarfile.TarInfo(bad)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"0"))
        with pytest.raises(SystemExit, match="not a banked run file"):
            tool.restore(bank, tmp_path / "out")
    assert not (tmp_path / "escape.json").exists()


def test_check_names_the_mnistc_sets_that_differ_between_chunks(tool, tmp_path):
    def chunk(name, hashes):
        (tmp_path / name / "mnistc").mkdir(parents=True)
        for stem, h in hashes.items():
            (tmp_path / name / "mnistc" / f"{stem}.{h[:12]}.json").write_text(json.dumps({"sha256": h}))
        return tmp_path / name

    a = chunk("fashion-a", {"fashion-fog-v1-s2019": "1" * 64, "fashion-zigzag-v1-s2019": "2" * 64})
    b = chunk("fashion-b", {"fashion-fog-v1-s2019": "1" * 64, "fashion-zigzag-v1-s2019": "3" * 64})
    assert tool.check([a]) == []
    assert tool.check([a, b]) == ["fashion-zigzag-v1-s2019: different images in fashion-a / fashion-b"]
    assert tool.main(["--check", str(a), str(b)]) == 1
