"""docs/byom.md's example of training a model on the embedded MNIST runs as written, and the torch.export archive it
saves loads through ``bench run --model``'s loader and passes the probe, with no warning from bench."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

DOC = Path(__file__).resolve().parents[1] / "docs" / "byom.md"


def test_the_embedded_mnist_training_example_runs(tmp_path, monkeypatch, capsys):
    import torch

    from bench.own.model import UserModel
    from bench.own.model_files import load_model

    section = DOC.read_text().split("## Train your own model on the embedded MNIST", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "byom_example"})
    acc = float(re.search(r"MNIST test accuracy ([\d.]+)%", capsys.readouterr().out).group(1))
    assert 80 < acc <= 100  # 89.4% on 2026-12-06 (torch 2.14.1, CPU): above 80% it learned from the labels given
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_model("my_net.pt2")
        model = UserModel(loaded.module, loaded.name)
        model.probe(torch.rand(5, 1, 28, 28), 10)  # a batch size other than the 8 it was exported with
        model.close()
    assert loaded.origin.startswith("torch.export") and model.num_classes == 10
    assert [str(w.message) for w in seen] == []
