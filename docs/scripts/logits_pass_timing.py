"""What keeping logits costs a method with an inference of its own when no shared pass is there to reuse (it is
alone in its unit): one extra ``logits`` pass of its classifier, timed beside the method's own ``predict``, on the
MNIST test set, best of ``--repeats`` (CPU; the methods are loaded from a finished run, nothing is trained).

    python docs/scripts/logits_pass_timing.py RUN --methods odin,mcdropout [--repeats 3] [--max-eval 0]

docs/reporting.md records a result.
"""

from __future__ import annotations

import argparse
import time

from bench.datasets.evalsets import EvalContext, build
from bench.run.loading import load_method


def best(fn, repeats: int) -> float:
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--methods", default="odin,mcdropout")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-eval", type=int, default=0)
    args = ap.parse_args()
    images = build("mnist", EvalContext(max_eval=args.max_eval)).images
    for name in args.methods.split(","):
        m = load_method(args.run, name)
        own = best(lambda: m.predict(images, batch_size=2048), args.repeats)
        extra = best(lambda: m.logits(images, batch_size=2048), args.repeats)
        print(f"{name}: predict {own:.3f} s, extra logits pass {extra:.3f} s ({100 * extra / own:.1f}% of predict) "
              f"on {len(images)} images")


if __name__ == "__main__":
    main()
