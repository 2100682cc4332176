"""Logits in every cell and ``bench rescore``: every cell keeps the classifier's float32 logits (features on
request); a post-hoc scorer added from them gives the rows of a fresh run, without inference."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bench
from bench.cli import main
from bench.errors import UsageError

pytestmark = pytest.mark.e2e  # every test here runs bench end to end (tier: see tests/conftest.py)


SETS = "mnist,ood:uniform,ood:fashion,fgsm:eps=0.1"
SMOKE = ["run", "--profile", "smoke", "--datasets", SETS, "--device", "cpu", "--no-progress",
         "--set", "eval.max_eval=300", "--set", "eval.cost_images=100"]
TIMING = {"gen_seconds"}  # the attack's generation time is measured anew by a fresh run


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def values(run: Path, method: str, drop: set[str] = frozenset()) -> dict[tuple[str, str], float]:
    return {(r["eval_set"], r["metric"]): float(r["value"]) for r in read_rows(run)
            if r["method"] == method and r["eval_set"] != "cost" and r["metric"] not in drop}


def arrays(run: Path, method: str, eval_set: str) -> dict[str, np.ndarray]:
    from bench.run.store import cell_key

    with np.load(run / "predictions" / f"{cell_key(method, 0, 0, eval_set)}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run of msp and mcdropout, and a fresh run of energy and maxlogit on the same cached baseline."""
    root = tmp_path_factory.mktemp("rescore")
    cache = ["--cache-dir", str(root / "cache")]
    assert main([*SMOKE, "--methods", "msp,mcdropout", "--out", str(root / "msp"), *cache]) == 0
    assert main([*SMOKE, "--methods", "energy,maxlogit", "--out", str(root / "fresh"), *cache]) == 0
    return root


def test_every_cell_keeps_the_classifier_logits(runs):
    for ds in SETS.split(","):
        msp, mcd = arrays(runs / "msp", "msp", ds), arrays(runs / "msp", "mcdropout", ds)
        assert msp["logits"].dtype == np.float32 and msp["logits"].shape == msp["probs"].shape == (300, 10)
        assert np.allclose(torch.from_numpy(msp["logits"]).softmax(1).numpy(), msp["probs"], atol=1e-6)
        # MC-dropout has inference of its own; its network is the shared baseline, so its logits are msp's
        assert np.array_equal(mcd["logits"], msp["logits"]) and not np.array_equal(mcd["probs"], msp["probs"])
        assert "features" not in msp  # opt-in


def test_rescore_gives_the_rows_of_a_fresh_run(runs, tmp_path):
    run = tmp_path / "msp"
    shutil.copytree(runs / "msp", run)
    df = bench.rescore(run, ["energy", "maxlogit"])
    assert set(df.method) == {"energy", "maxlogit"} and set(df.eval_set) == set(SETS.split(","))
    for method in ("energy", "maxlogit"):
        fresh, added = values(runs / "fresh", method, TIMING), values(run, method, TIMING)
        assert added == fresh  # the same functions on the same float32 logits: equal, not merely close
        for ds in SETS.split(","):
            a, b = arrays(run, method, ds), arrays(runs / "fresh", method, ds)
            assert all(np.array_equal(a[k], b[k]) for k in ("probs", "confidence", "labels", "logits"))
    # the eval set's own rows are the shared baseline's, as a run shares its attack among post-hoc scorers
    gen = {(r["method"], r["metric"]): r["value"] for r in read_rows(run) if r["eval_set"] == "fgsm:eps=0.1"}
    assert gen[("energy", "gen_seconds")] == gen[("msp", "gen_seconds")]
    assert gen[("energy", "robust_accuracy")] == gen[("msp", "robust_accuracy")]
    assert values(run, "msp") == values(runs / "msp", "msp")  # the run's own cells are untouched
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rescored"][0]["from"] == "msp" and manifest["rescored"][0]["cells"] == 8
    assert manifest["hyperparameters"]["energy"] == {"temperature": 1.0}
    from bench.report.runs import load_runs

    assert {"energy", "maxlogit", "msp"} <= set(load_runs([run]).rows.method)  # the report reads it
    assert bench.rescore(run, ["energy"]).empty  # cells it holds are kept


def test_rescore_command_and_source(runs, tmp_path, capsys):
    run = tmp_path / "msp"
    shutil.copytree(runs / "msp", run)
    assert main(["rescore", str(run), "--methods", "entropy", "--from", "mcdropout"]) == 0
    assert "rescore: 4 new cells" in capsys.readouterr().out
    assert json.loads((run / "manifest.json").read_text())["rescored"][0]["from"] == "mcdropout"
    assert {r["method"] for r in read_rows(run)} == {"msp", "mcdropout", "entropy"}


@pytest.mark.parametrize("methods, message", [
    (["temperature"], "temperature fits on the training split"),
    (["knn"], "knn fits on the training split"),
    (["odin"], "odin has inference of its own"),
    (["energie"], "did you mean energy"),
    ([], "--methods is empty"),
])
def test_rescore_refuses_what_it_cannot_add(runs, tmp_path, methods, message):
    run = tmp_path / "msp"
    shutil.copytree(runs / "msp", run)
    with pytest.raises(UsageError, match=message) as e:
        bench.rescore(run, methods)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in (run / "cells").iterdir()) == sorted(p.name for p in (runs / "msp/cells").iterdir())


def test_rescore_refuses_a_run_without_logits_before_writing(runs, tmp_path):
    run = tmp_path / "msp"
    shutil.copytree(runs / "msp", run)
    path = run / "predictions" / "msp__seed0__fold0__ood_fashion.npz"
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files if k != "logits"}
    buf = io.BytesIO()
    np.savez_compressed(buf, **kept)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UsageError, match="holds no logits"):
        bench.rescore(run, ["energy"])
    assert not list((run / "cells").glob("energy*"))
    with pytest.raises(UsageError, match="not a run directory"):
        bench.rescore(tmp_path / "nothing", ["energy"])
    with pytest.raises(UsageError, match="--from odin: the run has no cells"):
        bench.rescore(run, ["energy"], source="odin")


def test_save_features_keeps_penultimate_features(runs, tmp_path):
    out = tmp_path / "feat"
    assert main([*SMOKE, "--methods", "msp,odin", "--out", str(out), "--cache-dir", str(runs / "cache"),
                 "--set", "save_features=true"]) == 0
    for ds in ("mnist", "fgsm:eps=0.1"):
        msp, odin = arrays(out, "msp", ds), arrays(out, "odin", ds)
        assert msp["features"].dtype == np.float32 and msp["features"].shape[0] == 300
        assert np.array_equal(odin["features"], msp["features"]) and np.array_equal(odin["logits"], msp["logits"])
        assert np.array_equal(msp["logits"], arrays(runs / "msp", "msp", ds)["logits"])
    # the flag only adds arrays: a run with it is reported and compared with one without
    from bench.report.runs import load_runs

    assert set(load_runs([out, runs / "fresh"]).rows.method) == {"msp", "odin", "energy", "maxlogit"}


def test_bench_score_reads_a_runs_probs_by_default_and_its_logits_on_request(runs, tmp_path):
    pred = runs / "msp" / "predictions"
    for use in ("auto", "logits"):
        out = tmp_path / use
        assert main(["score", str(pred / "mcdropout__seed0__fold0__mnist.npz"), "--name", "mnist", "--use", use,
                     "--out", str(out)]) == 0
    scored = {(r["metric"]): float(r["value"]) for r in read_rows(tmp_path / "auto")}
    run = {m: v for (ds, m), v in values(runs / "msp", "mcdropout").items() if ds == "mnist"}
    assert scored == run  # mcdropout's own probabilities
    as_logits = {(r["metric"]): float(r["value"]) for r in read_rows(tmp_path / "logits")}
    assert as_logits["nll"] == pytest.approx(values(runs / "msp", "msp")[("mnist", "nll")], abs=1e-4)
    assert as_logits["nll"] != scored["nll"]


@pytest.mark.parametrize("features", [False, True])
def test_a_method_with_inference_of_its_own_alone_in_its_unit_gets_the_baseline_logits(runs, tmp_path, features):
    """ODIN alone: no shared pass to reuse, so one extra pass of its classifier (autograd on) gives the logits."""
    out = tmp_path / "odin"
    flags = ["--set", "save_features=true"] if features else []
    assert main([*SMOKE, "--datasets", "mnist", "--methods", "odin", "--out", str(out), "--cache-dir",
                 str(runs / "cache"), *flags]) == 0
    odin, msp = arrays(out, "odin", "mnist"), arrays(runs / "msp", "msp", "mnist")
    assert np.array_equal(odin["logits"], msp["logits"]) and ("features" in odin) == features
