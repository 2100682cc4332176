"""The regression gate: baseline round trip, tolerances, readable diff, bad baselines, the committed smoke
baseline, and a real run whose scorer is deliberately broken failing the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _runs import write_run
from bench.cli import main
from bench.errors import UsageError
from bench.report import gate
from bench.report.runs import load_runs

REPO = Path(__file__).resolve().parents[1]


def _rows_edit(run: Path, method: str, eval_set: str, metric: str, delta: float) -> None:
    """Shift one metric of every seed of a synthetic run by ``delta``."""
    for cell in (run / "cells").glob(f"{method}__seed*__fold0__{eval_set.replace(':', '_')}.json"):
        rows = json.loads(cell.read_text())
        for r in rows:
            if r["metric"] == metric:
                r["value"] += delta
        cell.write_text(json.dumps(rows))


def test_baseline_round_trip_passes(tmp_path):
    runs = load_runs([write_run(tmp_path)])
    base = gate.make_baseline(runs, {})
    assert base["schema"] == gate.SCHEMA
    tracked = {r["metric"] for r in base["metrics"]}
    assert "sec_per_epoch" not in tracked and "params" in tracked  # wall times never tracked
    alpha_acc = next(r for r in base["metrics"] if (r["method"], r["eval_set"], r["metric"]) ==
                     ("alpha", "mnist", "accuracy"))
    assert (alpha_acc["value"], alpha_acc["n"]) == (91.0, 3)  # mean over the 3 seeds
    assert gate.compare(runs, base).ok


def test_moves_beyond_tolerance_fail_with_a_readable_diff(tmp_path):
    base = gate.make_baseline(load_runs([write_run(tmp_path, "base")]), {})
    run = write_run(tmp_path, "new")
    _rows_edit(run, "beta", "mnist", "auroc", -25.0)  # a scorer at chance
    _rows_edit(run, "alpha", "mnist", "accuracy", +0.9)  # within the 1.0 tolerance
    _rows_edit(run, "gamma", "cost", "sec_per_epoch", +100.0)  # untracked
    _rows_edit(run, "gamma", "ood:fashion", "ood_auroc", +3.0)  # beyond 2.0, and better: still a change
    result = gate.compare(load_runs([run]), base)
    moved = {(c.method, c.eval_set, c.metric): c for c in result.failures}
    assert set(moved) == {("beta", "mnist", "auroc"), ("gamma", "ood:fashion", "ood_auroc")}
    assert moved[("beta", "mnist", "auroc")].verdict == "worse"
    assert moved[("gamma", "ood:fashion", "ood_auroc")].verdict == "better"
    text = gate.diff_text(result, Path("b.json"), run)
    assert text.startswith("FAIL: 2 of") and "75.00 ->    50.00" in text and "(tolerance ±2)" in text
    assert gate.compare(load_runs([run]), base, {"auroc": 30.0, "ood_auroc": 5.0}).ok  # overrides


def test_missing_method_fails(tmp_path):
    base = gate.make_baseline(load_runs([write_run(tmp_path, "base")]), {})
    result = gate.compare(load_runs([write_run(tmp_path, "new", methods=("alpha", "beta"))]), base)
    assert result.failures and all(c.method == "gamma" and c.verdict == "missing from the run"
                                   for c in result.failures)


def test_parse_tolerances():
    assert gate.parse_tolerances(["auroc=1.5", "*=0.5"]) == {"auroc": 1.5, "*": 0.5}
    for bad in ("auroc", "auroc=x", "=1", "auroc=-1"):
        with pytest.raises(UsageError, match="malformed"):
            gate.parse_tolerances([bad])


@pytest.mark.parametrize("content, message", [
    ({"schema": 0, "kind": "bench-baseline", "metrics": []}, "has schema 0 but this bench reads schema 1"),
    ({"schema": 1, "metrics": []}, "is not a bench baseline"),
    ({"schema": 1, "kind": "bench-baseline", "metrics": [{"method": "a"}]}, "malformed"),
    ("{not json", "not valid JSON"),
    (None, "does not exist"),
])
def test_bad_baselines_exit_2_one_line_and_untouched(tmp_path, capsys, content, message):
    run = write_run(tmp_path)
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    before = path.read_text() if path.exists() else None
    assert main(["compare", str(run), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (path.read_text() if path.exists() else None) == before


def test_cli_update_then_pass_then_config_mismatch(tmp_path, capsys):
    base = tmp_path / "b" / "base.json"
    assert main(["compare", str(write_run(tmp_path, "a")), "--baseline", str(base), "--update",
                 "--tolerance", "auroc=0.5"]) == 0
    assert gate.load_baseline(base)["tolerances"]["auroc"] == 0.5
    assert main(["compare", str(write_run(tmp_path, "b2")), "--baseline", str(base)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    assert main(["compare", str(write_run(tmp_path, "b3")), "--baseline", str(base), "--tolerance", "aurocc=1"]) == 2
    assert "unknown metric; did you mean auroc" in capsys.readouterr().err
    other = write_run(tmp_path, "c", epochs=3)
    assert main(["compare", str(other), "--baseline", str(base)]) == 2
    assert "train" in capsys.readouterr().err


def test_committed_smoke_baseline_is_valid_and_not_degenerate():
    base = gate.load_baseline(REPO / "results" / "baselines" / "smoke.json")
    assert base["config"]["profile"] == "smoke"
    values = {(r["method"], r["eval_set"], r["metric"]): r["value"] for r in base["metrics"]}
    for method in ("msp", "mcdropout"):
        assert values[(method, "mnist", "accuracy")] > 50.0  # far above chance (10%)
        assert values[(method, "mnist", "auroc")] > 60.0  # a useful detector: chance is 50
        assert values[(method, "ood:fashion", "ood_auroc")] > 60.0


def _smoke(out: Path, cache: Path) -> list[str]:
    return ["run", "--profile", "smoke", "--methods", "msp", "--device", "cpu", "--datasets", "mnist,ood:fashion",
            "--set", "split.max_train=600", "--set", "eval.max_eval=400", "--out", str(out), "--cache-dir",
            str(cache), "--no-progress"]


def test_gate_fails_on_a_deliberately_broken_scorer(tmp_path, capsys, monkeypatch):
    """A real (tiny) smoke run makes the baseline; the same run with MSP's confidence replaced by noise (a broken
    scorer whose AUROC falls to chance) must fail the gate, naming the metrics that moved."""
    from bench.methods.msp import MSP

    cache = tmp_path / "cache"
    assert main(_smoke(tmp_path / "good", cache)) == 0
    assert main(["compare", str(tmp_path / "good"), "--baseline", str(tmp_path / "base.json"), "--update"]) == 0
    assert main(_smoke(tmp_path / "good2", cache)) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "good2"), "--baseline", str(tmp_path / "base.json")]) == 0

    def broken(self, logits):
        probs = logits.softmax(1)
        return probs, torch.rand(len(logits), generator=torch.Generator().manual_seed(len(logits)))

    monkeypatch.setattr(MSP, "score_logits", broken)
    assert main(_smoke(tmp_path / "broken", cache)) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "broken"), "--baseline", str(tmp_path / "base.json")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL:")
    moved = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert ["msp", "mnist", "auroc"] in [m[:3] for m in moved]
    assert ["msp", "ood:fashion", "ood_auroc"] in [m[:3] for m in moved]
    assert "worse" in out


def test_star_on_the_command_line_tightens_every_metric_not_named():
    """Issue 35: ``--tolerance '*=X'`` tightened nothing on the shipped baseline, where every tracked metric has its
    own tolerance; on the command line it now sets every metric not named in another --tolerance."""
    from bench.report.gate import DEFAULT_TOLERANCES, merged_tolerances, tolerance

    tols = merged_tolerances({"auroc": 2.0}, {"*": 0.1, "fpr95": 7.0})
    assert tolerance("auroc", tols) == 0.1 and tolerance("accuracy", tols) == 0.1 and tolerance("fpr95", tols) == 7
    assert tolerance("some_new_metric", tols) == 0.1
    kept = merged_tolerances({"auroc": 2.5}, None)  # without '*': the baseline's own, then bench's defaults
    assert tolerance("auroc", kept) == 2.5 and tolerance("accuracy", kept) == DEFAULT_TOLERANCES["accuracy"]


def test_mean_confidence_tolerance_is_relative_to_its_unit():
    """energy's mean confidence is in logit units (~10), msp's a probability: 2% of the baseline for both."""
    from bench.report.gate import merged_tolerances, tolerance

    tols = merged_tolerances({}, None)
    assert tolerance("mean_confidence", tols, 12.5) == pytest.approx(0.25)
    assert tolerance("mean_confidence", tols, 0.9) == pytest.approx(0.018)
    assert tolerance("auroc", tols, 97.0) == 2.0  # absolute ones stay absolute


def test_aupr_error_has_no_direction_without_the_error_rate():
    """A model that lost 24 points of accuracy showed 'aupr_error 42.71 -> 56.60 ... better': AUPR-Error rises with
    the error rate, so the gate says it changed."""
    from bench.report.gate import Change

    assert Change("m", "mnist", "aupr_error", 42.71, 56.60, 3.0).verdict == "changed (moves with the error rate)"
    assert Change("m", "mnist", "auroc", 97.0, 90.0, 2.0).verdict == "worse"
    assert Change("m", "mnist", "fpr95", 20.0, 10.0, 5.0).verdict == "better"
