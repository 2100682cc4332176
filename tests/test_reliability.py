"""The defects of issue 20, each reproduced as a test: a run owns its folder, indices survive interruptions, every
suggested fix works as typed, bad values are refused before training, files respect the umask, logs get a line per
cell, YAML errors say where."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _runs import write_run
from _tiny import indices, rows, run_main, tiny

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run, made under umask 022."""
    root = tmp_path_factory.mktemp("reference")
    old = os.umask(0o022)
    try:
        code, out, err = tiny(root / "run", root / "cache")
    finally:
        os.umask(old)
    assert code == 0, err
    return root, out, err


def copy_run(reference, tmp_path) -> tuple[Path, Path]:
    root = reference[0]
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "cache", tmp_path / "cache")
    # checkpoints.json names the cache by absolute path: point it at this copy
    for name in ("checkpoints.json",):
        p = tmp_path / "run" / name
        p.write_text(p.read_text().replace(str(root / "cache"), str(tmp_path / "cache")))
    for p in (tmp_path / "run" / "fitted").glob("*.json") if (tmp_path / "run" / "fitted").is_dir() else []:
        p.write_text(p.read_text().replace(str(root / "cache"), str(tmp_path / "cache")))
    m = tmp_path / "run" / "manifest.json"
    m.write_text(m.read_text().replace(str(root / "cache"), str(tmp_path / "cache")))
    return tmp_path / "run", tmp_path / "cache"


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


# --- a run owns its folder -----------------------------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder(tmp_path):
    from bench.run.runlock import RunLock

    with RunLock(tmp_path / "run"):
        code, _, err = tiny(tmp_path / "run", tmp_path / "cache")
    assert code == 2 and one_line(err), err
    assert f"pid {os.getpid()}" in err and "in use" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_second_writer_in_another_process_is_refused(tmp_path):
    """The lock holds across processes: a child holds it while this process tries to run."""
    run = tmp_path / "run"
    code = ("import sys; from bench.run.runlock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        rc, _, err = tiny(run, tmp_path / "cache")
        assert rc == 2 and f"pid {child.pid}" in err and one_line(err), err
    finally:
        child.communicate("")
    # the holder is gone: its lock is gone with it
    from bench.run.runlock import RunLock

    with RunLock(run):
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    from bench.run.runlock import RunLock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(f"{dead} somehost\n")
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text().split()[0] == str(os.getpid())


def test_out_on_a_folder_that_is_not_a_run_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own\n1,2\n")
    (mine / "manifest.json").write_text('{"my": "manifest"}')
    code, _, err = tiny(mine, tmp_path / "cache")
    assert code == 2 and one_line(err) and "not a bench run" in err, err
    assert (mine / "results.csv").read_text() == "my,own\n1,2\n"
    assert (mine / "manifest.json").read_text() == '{"my": "manifest"}'
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "results.csv"]


def test_out_on_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    code, _, err = tiny(tmp_path / "notes", tmp_path / "cache")
    assert code == 2 and "not a bench run" in err and "todo.txt" in err and one_line(err)


# --- indices derived from disk ---------------------------------------------------------------------------------------
def test_ctrl_c_after_a_units_cells_then_resume_keeps_every_checkpoint(reference, tmp_path, monkeypatch):
    """Ctrl-C right after the last cell of the second unit is written (before the driver hears of the unit): the
    resumed run's checkpoints.json must still list that unit's methods."""
    from bench.run.store import RunStore

    original = RunStore.write_cell

    def interrupt_after_last_cell(self, key, *args, **kwargs):
        original(self, key, *args, **kwargs)
        if key == "msp__seed1__fold0__cost":
            raise KeyboardInterrupt

    cache = reference[0] / "cache"  # a warm cache: nothing is trained, the checkpoints already exist
    monkeypatch.setattr(RunStore, "write_cell", interrupt_after_last_cell)
    code, _, err = tiny(tmp_path / "run", cache)
    assert code == 130, err
    monkeypatch.setattr(RunStore, "write_cell", original)
    code, _, err = tiny(tmp_path / "run", cache, "--resume")
    assert code == 0, err
    assert indices(tmp_path / "run") == indices(reference[0] / "run")
    assert rows(tmp_path / "run") == rows(reference[0] / "run")


def test_suggested_fix_for_a_missing_checkpoint_works_as_typed(reference, tmp_path):
    from bench.errors import UsageError
    from bench.run.loading import load_method

    run, cache = copy_run(reference, tmp_path)
    for p in cache.glob("msp-*.pt"):
        p.unlink()
    with pytest.raises(UsageError) as e:
        load_method(run, "msp")
    command = re.search(r"python -m bench (.*)$", str(e.value)).group(1)
    code, _, err = run_main(shlex.split(command))
    assert code == 0, err
    assert load_method(run, "msp").predict(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).probs.shape == (1, 10)


def test_interrupt_message_command_works_as_typed(tmp_path, reference, monkeypatch):
    from bench.run import worker

    original = worker.UnitWorker._run_method
    calls = {"n": 0}

    def interrupt_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # msp, energy of seed 0, then msp of seed 1
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(worker.UnitWorker, "_run_method", interrupt_second)
    code, _, err = tiny(tmp_path / "run", reference[0] / "cache")
    assert code == 130
    monkeypatch.setattr(worker.UnitWorker, "_run_method", original)
    command = re.search(r"continue with: python -m bench (.*)$", err.strip()).group(1)
    code, _, err = run_main(shlex.split(command))
    assert code == 0, err
    assert rows(tmp_path / "run") == rows(reference[0] / "run")


def test_partial_report_fix_works_as_typed(reference, tmp_path):
    run, _ = copy_run(reference, tmp_path)
    (run / "cells" / "energy__seed1__fold0__ood_uniform.json").unlink()
    code, _, err = run_main(["report", str(run)])
    assert code == 2 and "is partial" in err
    command = re.search(r"`python -m bench ([^`]*)`", err).group(1)
    code, _, err = run_main(shlex.split(command))
    assert code == 0, err
    assert run_main(["report", str(run)])[0] == 0
    assert rows(run) == rows(reference[0] / "run")


def test_resume_over_a_corrupt_cell_recomputes_it(reference, tmp_path):
    run, cache = copy_run(reference, tmp_path)
    (run / "cells" / "msp__seed0__fold0__mnist.json").write_text('[{"run_id": "x", "metr')
    code, out, err = tiny(run, cache, "--resume")
    assert code == 0 and "Traceback" not in err, err
    assert "corrupt" in err and "(1 cells computed" in out
    assert rows(run) == rows(reference[0] / "run")


# --- values refused before any training ----------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--set", "split.max_train=-5"], "split.max_train must be >= 0"),
    (["--set", "eval.max_eval=-1"], "eval.max_eval must be >= 0"),
    (["--methods", ""], "--methods '' names no method"),
    (["--methods", " , "], "names no method"),
    (["--datasets", ""], "names no eval set"),
    (["--datasets", "mnist,fgsm:eps=abc"], "eps='abc' is not a valid float"),
    (["--datasets", "fgsm:eps=0.1,fgsm:eps=0.10"], "same set under two spellings"),
    (["--datasets", "pgd:eps=0.1,steps=0"], "steps must be >= 1"),
    (["--datasets", "uap:xi=-1"], "xi=-1 is outside (0, 1]"),
    (["--datasets", "fooling:n=0"], "needs n >= 1"),
    (["--folds", "70000"], "more than the 60000 training images"),
])
def test_bad_values_are_refused_before_training(extra, message, tmp_path):
    code, _, err = tiny(tmp_path / "run", tmp_path / "cache", *extra)
    assert code == 2 and message in err and one_line(err), err
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing was trained


def test_single_rgb_image_in_an_npz_is_one_image(tmp_path):
    from bench.datasets.user_ood import read_images
    from bench.errors import DataError

    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luma 0.299 * 255 = 76.2 -> 76
    np.savez(tmp_path / "one.npz", images=rgb)
    x = read_images(tmp_path / "one.npz")
    assert x.shape == (1, 1, 28, 28) and int(x.min()) == int(x.max()) == 76
    np.savez(tmp_path / "chw.npz", images=rgb.transpose(2, 0, 1))
    with pytest.raises(DataError, match="ambiguous"):
        read_images(tmp_path / "chw.npz")
    np.savez(tmp_path / "grey.npz", images=np.full((28, 28), 255, np.uint8))
    assert read_images(tmp_path / "grey.npz").shape == (1, 1, 28, 28)


# --- one-line errors where there were tracebacks -------------------------------------------------------------------
def test_config_given_a_folder(tmp_path):
    code, _, err = run_main(["run", "--config", str(tmp_path)])
    assert code == 2 and "is a folder" in err and one_line(err), err


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  lr: [1,\n")
    code, _, err = run_main(["run", "--config", str(bad)])
    assert code == 2 and one_line(err), err
    assert re.search(r"at line \d+, column \d+", err), err


@pytest.fixture
def fake_run(tmp_path):
    return write_run(tmp_path, "run-a")


def test_report_to_unwritable_paths(fake_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(["report", str(fake_run), "--out", str(blocker / "r.md")])
    assert code == 2 and "--out" in err and one_line(err), err
    code, _, err = run_main(["report", str(fake_run), "--plots", str(blocker / "plots")])
    assert code == 2 and "--plots" in err and one_line(err), err


def test_compare_update_to_unwritable_path(fake_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(["compare", str(fake_run), "--baseline", str(blocker / "b.json"), "--update"])
    assert code == 2 and "cannot write --baseline" in err and one_line(err), err


def test_baseline_with_a_string_where_a_number_belongs(fake_run, tmp_path):
    base = tmp_path / "b.json"
    assert run_main(["compare", str(fake_run), "--baseline", str(base), "--update"])[0] == 0
    data = json.loads(base.read_text())
    data["metrics"][0]["value"] = "ninety"
    base.write_text(json.dumps(data))
    code, _, err = run_main(["compare", str(fake_run), "--baseline", str(base)])
    assert code == 2 and "'ninety', not a number" in err and one_line(err), err


# --- shared machines and logs --------------------------------------------------------------------------------------
def test_run_files_respect_the_umask(reference):
    run = reference[0] / "run"
    for p in [run / "results.csv", run / "manifest.json", run / "checkpoints.json",
              next((run / "cells").glob("*.json")), next((run / "predictions").glob("*.npz"))]:
        assert p.stat().st_mode & 0o777 == 0o644, p
    assert next((reference[0] / "cache").glob("*.pt")).stat().st_mode & 0o777 == 0o644


def test_not_a_terminal_gets_one_line_per_finished_cell(reference):
    err = reference[2]
    lines = [ln for ln in err.splitlines() if re.match(r"cell \d+/12 done: ", ln)]
    assert len(lines) == 12, err  # 2 methods x 2 seeds x (mnist, ood:uniform, cost)
    assert lines[0].startswith("cell 1/12 done: msp seed 0 fold 0 ") and lines[-1].startswith("cell 12/12 done: ")



def test_not_a_terminal_gets_one_line_per_training_epoch(reference):
    """A log file or CI sees training as it goes (issue 35 item 3): one line per epoch with the loss and seconds."""
    err = reference[2]
    lines = [ln for ln in err.splitlines() if ln.startswith("train ")]
    # smoke: 1 epoch; one baseline per seed (msp and energy share it)
    assert [ln.split(":")[0] for ln in lines] == ["train lenet seed 0 epoch 1", "train lenet seed 1 epoch 1"], err
    assert all(re.search(r"loss \d+\.\d{4}, val_accuracy [\d.]+ \(\d+\.\d s\)$", ln) for ln in lines), lines


def test_report_out_on_a_device_writes_through_it_and_leaves_it_a_device(tmp_path):
    """``bench report --out /dev/null`` (or /dev/stdout): the atomic rename of every other write would put a plain
    file in the device's place (as root it did, and the machine's /dev/null became a file), so a device or pipe is
    written through instead."""
    import os
    import stat
    import threading

    from bench.utils import atomic_write_text

    atomic_write_text("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "table\n")
    reader.join(timeout=10)
    assert got == ["table\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_code_mixed_from_two_checkouts_is_refused(tmp_path):
    """``python -m bench`` run in a second checkout imports its bench/, while a venv installed with ``pip install -e``
    in the first maps bench.methods and bench.datasets there: the manifest's git sha would name code that did not
    run (the Fashion-MNIST leaderboard's chunk f ran that way). Such a run stops before anything is written."""
    import bench
    import bench.methods
    from bench.run.provenance import mixed_code

    checkout = Path("/c")
    assert mixed_code(checkout / "bench", checkout / "methods", checkout / "datasets") == ""
    installed = Path("/site-packages/bench")
    assert mixed_code(installed, installed / "methods", installed / "datasets") == ""
    reason = mixed_code(Path("/other/bench"), checkout / "methods", checkout / "datasets")
    assert "bench/ from /other, its methods/ from /c" in reason and "\n" not in reason
    assert "its datasets/ from /d" in mixed_code(checkout / "bench", checkout / "methods", Path("/d/datasets"))

    here = Path(bench.__file__).parent
    if Path(bench.methods.__file__).parent.parent != here.parent:
        pytest.skip("bench is installed, not an editable checkout: no second checkout to mix with")
    shutil.copytree(here, tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "msp", "--profile", "smoke", "--out",
                        str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: bench's code comes from two places: bench/ from {tmp_path.resolve()}, its methods/ from "
        f"{here.parent.resolve()} (a venv installed with `pip install -e` in another checkout); run from that "
        "checkout, or `pip install -e .` in this one"]
    assert not out.exists()
