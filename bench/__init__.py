"""bench: a benchmark suite for confidence methods. Run ``python -m bench --help``.

``bench.evaluate(model, ...)`` scores a classifier you trained; ``bench.score(outputs, labels, ...)`` scores saved
outputs (docs/byom.md); ``bench.rescore(run, methods)`` adds post-hoc scorers to a run from its stored logits. They
are imported on first use, so ``import bench`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["evaluate", "rescore", "score"]


def __getattr__(name: str):
    if name == "evaluate":
        from bench.own.evaluate import evaluate

        return evaluate
    if name == "score":
        from bench.own.score import score

        return score
    if name == "rescore":
        from bench.run.rescore import rescore

        return rescore
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
