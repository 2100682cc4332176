"""The run config that transfer and uap-sweep build from --profile, --device, --cache-dir and --set: the profile
first, the two flags over it, --set over both; bad values are refused in one line before any training."""

from __future__ import annotations

import argparse

import pytest

from bench.cli import main
from bench.commands.run_config import add_config_flags, config_from_flags


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return p.parse_args(list(argv))


def test_profile_then_flags_then_set(tmp_path):
    # bench/profiles/smoke.yaml: train.epochs 1, split.max_train 2000, eval.max_eval 1000
    cfg = config_from_flags(_args("--profile", "smoke", "--device", "cuda", "--cache-dir", str(tmp_path / "c"),
                                  "--set", "train.epochs=3", "--set", "device=cpu", "--set", "mcdropout.passes=4"))
    assert (cfg.profile, cfg.train.epochs, cfg.split.max_train, cfg.eval.max_eval) == ("smoke", 3, 2000, 1000)
    assert cfg.device == "cpu"  # --set wins over --device
    assert cfg.cache_dir == str(tmp_path / "c")
    assert cfg.options_for("mcdropout")["passes"] == 4  # a method option is checked against its Config


def test_without_flags_the_defaults_stand():
    cfg = config_from_flags(_args())
    assert (cfg.profile, cfg.device, cfg.cache_dir) == ("quick", "auto", "results/cache")


@pytest.mark.parametrize("command", ["transfer", "uap-sweep"])
@pytest.mark.parametrize("args, msg", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--set", "msp.bogus=1"], "unknown key msp.bogus"),
    (["--set", "train.lr=x"], "is not a valid float"),
])
def test_both_commands_refuse_a_bad_config_in_one_line_before_training(command, args, msg, tmp_path, capsys):
    code = main([command, *args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()
