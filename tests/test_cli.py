"""End to end: the CLI on the smoke profile, resume, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.datasets.benchmarks import run_defaults
from bench.datasets.source import embedded

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


SMOKE = ["run", "--profile", "smoke", "--methods", "msp,mcdropout", "--device", "cpu", "--no-progress"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    proc = run_cli(*SMOKE, "--out", str(root / "run"), "--cache-dir", str(root / "cache"))
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_smoke_run_writes_tidy_results_manifest_and_predictions(smoke_run):
    root, proc = smoke_run
    run = root / "run"
    rows = read_rows(run)
    assert list(rows[0]) == ["run_id", "method", "backbone", "seed", "fold", "eval_set", "shift", "severity",
                             "metric", "value"]
    sets = {(r["method"], r["eval_set"]) for r in rows}
    for method in ("msp", "mcdropout"):
        for ds in [*run_defaults("mnist", embedded()), "cost"]:
            assert (method, ds) in sets
    acc = [float(r["value"]) for r in rows if r["metric"] == "accuracy" and r["method"] == "msp"]
    assert len(acc) == 1 and 50 < acc[0] <= 100
    ood = [float(r["value"]) for r in rows if r["metric"] == "ood_auroc" and r["eval_set"] == "ood:uniform"]
    assert all(50 < v <= 100 for v in ood) and len(ood) == 2
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["profile"] == "smoke" and manifest["versions"]["torch"]
    assert {"git_sha", "device", "device_name", "command"} <= set(manifest)
    assert len(list((run / "predictions").glob("*.npz"))) == 2 * len(run_defaults("mnist", embedded()))
    assert "Acc %" in proc.stdout and "mcdropout" in proc.stdout


def test_resume_skips_finished_cells_and_recomputes_missing_ones(smoke_run, tmp_path):
    root, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    before = read_rows(run)
    (run / "cells" / "msp__seed0__fold0__ood_fashion.json").unlink()
    proc = run_cli(*SMOKE, "--out", str(run), "--cache-dir", str(root / "cache"), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "(1 cells computed, 9 resumed)" in proc.stdout
    after = read_rows(run)
    key = lambda r: (r["method"], r["eval_set"], r["metric"])  # noqa: E731
    # cached checkpoint + seeded inference: the recomputed cell has exactly the same values
    same = {key(r): r["value"] for r in before if r["eval_set"] != "cost"}
    assert same == {key(r): r["value"] for r in after if r["eval_set"] != "cost"}


def test_resume_with_another_config_is_refused(smoke_run, tmp_path, capsys):
    root, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    code = main([*SMOKE, "--out", str(run), "--cache-dir", str(root / "cache"), "--resume", "--set",
                 "train.epochs=2"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume" in err and "train" in err and err.count("\n") == 1


def test_existing_run_dir_needs_resume(smoke_run, capsys):
    root, _ = smoke_run
    code = main([*SMOKE, "--out", str(root / "run"), "--cache-dir", str(root / "cache")])
    assert code == 2 and "already holds results" in capsys.readouterr().err


def test_interrupt_keeps_finished_cells(tmp_path, capsys, monkeypatch):
    from bench.run import worker

    calls = {"n": 0}
    original = worker.UnitWorker._run_method

    def interrupt_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(worker.UnitWorker, "_run_method", interrupt_second)
    run = tmp_path / "run"
    code = main([*SMOKE, "--out", str(run), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 130 and "--resume" in err
    rows = read_rows(run)  # results.csv was still written, with the finished method's cells
    assert {r["method"] for r in rows} == {"msp"}


@pytest.mark.parametrize("args, code, msg", [
    (["run", "--methods", "mspp"], 2, "unknown method 'mspp'; did you mean msp"),
    (["run", "--methods", "zz*"], 2, "no method matches 'zz*'"),
    (["run", "--backbone", "lenett"], 2, "unknown backbone 'lenett'"),
    (["run", "--datasets", "ood:fashon"], 2, "unknown eval set 'ood:fashon'"),
    (["run", "--seeds", "0,x"], 2, "--seeds '0,x' is malformed"),
    (["run", "--set", "train.epochs"], 2, "--set 'train.epochs' is malformed"),
    (["run", "--set", "train.lr=fast"], 2, "train.lr='fast' is not a valid float"),
    (["run", "--device", "tpu"], 2, "--device 'tpu' is not valid"),
    (["run", "--profile", "huge"], 2, "unknown profile 'huge'"),
    (["run", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
    (["list", "methods", "zz*"], 2, "no methods match"),
])
def test_bad_input_is_one_line_error(args, code, msg, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "r")] if args[0] == "run" and "--frobnicate" not in args
                else args) == code
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_config_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "does not parse as YAML" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  epochz: 3\n")
    assert main(["run", "--config", str(unknown)]) == 2
    assert "unknown key train.epochz" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*SMOKE, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out" in err and err.count("\n") == 1


def test_nan_loss_is_a_one_line_error_and_exit_1(tmp_path, capsys):
    code = main([*SMOKE, "--methods", "msp", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"),
                 "--set", "train.optimizer=sgd", "--set", "train.lr=1e12"])
    err = capsys.readouterr().err
    assert code == 1
    assert "loss became" in err and "lower the learning rate" in err
    assert "Traceback" not in err
    errors = json.loads((tmp_path / "run" / "errors.json").read_text())
    assert errors[0]["method"] == "msp"


def test_list_commands(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "msp" in out and "mcdropout" in out
    assert main(["list", "datasets", "ood:*"]) == 0
    out = capsys.readouterr().out
    assert "ood:fashion" in out and not any(line.startswith("mnist") for line in out.splitlines())
    assert main(["list", "backbones"]) == 0
    assert "timm:<name>" in capsys.readouterr().out


def test_retrain_trains_once_per_run_and_ignores_older_checkpoints(tmp_path):
    from bench.cache import CheckpointCache

    old = CheckpointCache(tmp_path)
    old.put("k", {"v": 1})
    fresh = CheckpointCache(tmp_path, ignore_existing=True)
    assert old.get("k") == {"v": 1} and fresh.get("k") is None
    fresh.put("k", {"v": 2})
    assert fresh.get("k") == {"v": 2}


def test_device_name_names_the_cpu_model_and_its_vector_width(tmp_path, monkeypatch):
    """Timings and trained networks depend on the CPU (AVX-512 and AVX2 kernels round differently): the manifest's
    device says which, with the thread count in words."""
    import torch

    from bench.utils import cpu_model, device_name

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx avx2 avx512f avx512dq\n")
    assert cpu_model(str(info)) == "AMD EPYC 9R14, avx512"
    info.write_text("model name\t: Intel(R) Xeon(R) CPU\nflags\t\t: fpu avx avx2\n")
    assert cpu_model(str(info)) == "Intel(R) Xeon(R) CPU, avx2"
    assert cpu_model(str(tmp_path / "absent")) != ""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert device_name(torch.device("cpu")).endswith(", 1 thread)")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert device_name(torch.device("cpu")).endswith(", 4 threads)")
