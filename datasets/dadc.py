"""``dadc:RUN``: the examples people drew on ``bench serve --run RUN`` to fool the models, with the true digits they
gave, as an in-distribution (labelled) evaluation set of shift family ``dadc``. The set grows as people flag more
examples; the number used is reported as the extra metric ``examples``."""

from __future__ import annotations

from pathlib import Path

from bench.datasets.evalsets import EVAL_SETS, EvalContext, EvalData, EvalSetSpec
from bench.errors import DataError, UsageError


def _dadc(ctx: EvalContext, params: str) -> EvalData:
    from bench.dadc.rounds import example_tensors
    from bench.dadc.store import DadcStore

    if not params:
        raise UsageError("the dadc eval set needs a run: --datasets dadc:RUN (a run served with bench serve)")
    store = DadcStore(Path(params))
    if not store.exists():
        raise DataError(f"dadc:{params}: {store.path} does not exist; collect examples with "
                        f"python -m bench serve --run {params}")
    data = example_tensors(store.examples())
    if len(data) == 0:
        raise DataError(f"dadc:{params}: {store.path} holds no examples yet; flag some on python -m bench serve "
                        f"--run {params}")
    n = ctx.cap(len(data))
    return EvalData(f"dadc:{params}", data.images[:n], data.labels[:n], "id", "dadc", extra={"examples": float(n)})


EVAL_SETS.add("dadc", EvalSetSpec(_dadc, offline=True, family=True, defaults=("dadc:",), report_group="dadc"),
              "human-made adversarial digits collected by bench serve: dadc:RUN (a run directory)")
