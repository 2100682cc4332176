"""tools/compare_worlds.py on constructed report CSVs with known rankings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tools import load_tool

HEADER = "group,eval_set,metric,method,n,mean,std,ci_low,ci_high,best,not_worse_than_best,p_holm,higher_is_better\n"


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_worlds")


def write(path: Path, id_set: str, auroc: dict[str, float], aurc: dict[str, float], near: dict[str, float]) -> Path:
    rows = [f"id,{id_set},auroc,{m},5,{v},0,,,0,0,,1" for m, v in auroc.items()]
    rows += [f"id,{id_set},aurc,{m},5,{v},0,,,0,0,,0" for m, v in aurc.items()]
    rows += [f"id,{id_set},n_errors,{m},5,100,0,,,0,0,,0" for m in auroc]
    rows += [f"ood-near,ood:notmnist,ood_auroc,{m},5,{v},0,,,0,0,,1" for m, v in near.items()]
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_same_ranking_gives_rho_one_and_a_reversal_minus_one(tool, tmp_path):
    a = write(tmp_path / "a.csv", "mnist", {"msp": 95, "odin": 90, "knn": 85, "vim": 80},
              {"msp": 1, "odin": 2, "knn": 3, "vim": 4}, {"msp": 90, "odin": 91, "knn": 92})
    b = write(tmp_path / "b.csv", "fashion", {"msp": 80, "odin": 75, "knn": 70, "vim": 60, "extra": 99},
              {"msp": 4, "odin": 3, "knn": 2, "vim": 1}, {"msp": 92, "odin": 91, "knn": 90})
    rows = {(r["group"], r["eval_set"], r["metric"]): r for r in tool.compare(a, b, ["*"], ["*"], 2)}
    assert set(rows) == {("id", "ID", "auroc"), ("id", "ID", "aurc"), ("ood-near", "ood:notmnist", "ood_auroc")}
    assert rows[("id", "ID", "auroc")]["rho"] == pytest.approx(1.0)  # "extra" is in one world only: left out
    assert rows[("id", "ID", "auroc")]["methods"] == 4
    # AURC: lower is better, so rank 1 is the smallest; the order is reversed between the worlds
    assert rows[("id", "ID", "aurc")]["rho"] == pytest.approx(-1.0)
    assert rows[("id", "ID", "aurc")]["movers"][0] == ("msp", 1.0, 4.0)
    assert rows[("ood-near", "ood:notmnist", "ood_auroc")]["rho"] == pytest.approx(-1.0)


def test_filters_and_the_cli(tool, tmp_path, capsys):
    same = {"x": 1, "y": 2, "z": 3}
    a = write(tmp_path / "a.csv", "mnist", same, same, same)
    b = write(tmp_path / "b.csv", "fashion", {"x": 1, "y": 3, "z": 2}, same, same)
    assert [r["metric"] for r in tool.compare(a, b, ["id"], ["auroc"], 1)] == ["auroc"]
    assert tool.main([str(a), str(b), "--groups", "id", "--metrics", "auroc"]) == 0
    out = capsys.readouterr().out
    assert "| id | ID | auroc | 3 | 0.50 |" in out
    assert tool.main([str(a), str(tmp_path / "missing.csv")]) == 2


def test_named_boards_and_the_per_group_summary(tool, tmp_path, capsys):
    a = write(tmp_path / "a.csv", "mnist", {"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 1, "z": 1})
    b = write(tmp_path / "b.csv", "fashion", {"x": 1, "y": 3, "z": 2}, {"x": 3, "y": 2, "z": 1},
              {"x": 1, "y": 1, "z": 1})
    assert tool.main([str(a), str(b), "--names", "MNIST,Fashion-MNIST"]) == 0
    out = capsys.readouterr().out
    assert "largest rank changes (MNIST -> Fashion-MNIST)" in out
    # id: auroc rho 0.5, aurc rho -1 -> median -0.25, lowest -1 (aurc); ood-near: every method tied, rho undefined
    assert "| id | 2 | -0.25 | -1.00 (ID aurc) |" in out
    assert "| ood-near | 0 | - | - |" in out
    assert tool.main([str(a), str(b), "--names", "only-one"]) == 2
