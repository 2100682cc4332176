"""CPU levers for lenet on one thread, side by side in one process (docs/performance.md, "Levers, weighed"). Not a
pytest file: run it as

    python tests/benchmarks/time_cpu_levers.py [--threads 1] [--rounds 2]

It times, on random 28x28 inputs (the timing does not depend on the values):

- a training step (Adam, batch 128) and an input-gradient pass (what each PGD step of advtrain costs), eager or
  ``torch.compile``d, in the default or the channels-last layout; compile time is the first call;
- an input-gradient pass with the parameters frozen (``requires_grad=False``) against not, with equal gradients;
- an evaluation forward pass over 10,000 images at several batch sizes, with its outputs compared bit for bit;
- one advtrain step as the method takes it (PGD-10 at eps 0.3 in eval mode, then the update; channels-last, as
  ``fit_loop`` trains on a CPU) and where its time goes (torch profiler, the operators with most self time).

Times are ms per call (steps) or ms per 1,000 images (evaluation), the best of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench.methods.core.attacks import input_grad, perturb
from bench.methods.core.backbones import create_backbone
from bench.methods.core.training import eval_mode

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--threads", type=int, default=1)
p.add_argument("--rounds", type=int, default=2)
p.add_argument("--steps", type=int, default=40, help="timed calls per measurement")
args = p.parse_args()
torch.set_num_threads(args.threads)


def lenet(channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_backbone("lenet", 10)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def per_call(fn, n: int) -> tuple[float, float]:
    """(seconds of the first call, best-of-rounds ms per later call)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, 1000 * (time.perf_counter() - t0) / n)
    return first, best


gen = torch.Generator().manual_seed(0)
x = torch.rand(128, 1, 28, 28, generator=gen)
y = torch.randint(0, 10, (128,), generator=gen)

print(f"torch {torch.__version__}, {args.threads} thread(s)")
for channels_last in (False, True):
    for compiled in (False, True):
        m = lenet(channels_last)
        run = torch.compile(m) if compiled else m
        opt = torch.optim.Adam(m.parameters(), 2e-3)

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(run(x), y).backward()
            opt.step()

        run.train()
        f1, step_ms = per_call(train_step, args.steps)
        run.eval()
        f2, grad_ms = per_call(lambda: input_grad(run, x, y), args.steps)
        print(f"layout {'channels-last' if channels_last else 'default':13s} {'compiled' if compiled else 'eager':8s}: "
              f"train step {step_ms:5.1f} ms (first call {f1:4.1f} s), input-grad pass {grad_ms:5.1f} ms "
              f"(first call {f2:4.1f} s)")

m = lenet(True).eval()
g_live = input_grad(m, x, y)
_, live = per_call(lambda: input_grad(m, x, y), args.steps)
for q in m.parameters():
    q.requires_grad_(False)
g_frozen = input_grad(m, x, y)
_, frozen = per_call(lambda: input_grad(m, x, y), args.steps)
print(f"input-grad pass, channels-last: parameters live {live:.1f} ms, frozen {frozen:.1f} ms, "
      f"same gradient: {torch.equal(g_live, g_frozen)}")

m = lenet(False).eval()
images = torch.rand(10000, 1, 28, 28, generator=gen)


def forward(bs: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([m(images[i:i + bs]) for i in range(0, len(images), bs)])


ref = forward(2048)
for bs in (256, 512, 1024, 2048, 8192):
    _, ms = per_call(lambda: forward(bs), 1)  # noqa: B023 (called at once, inside the loop)
    print(f"evaluation, batch {bs:5d}: {ms / 10:6.1f} ms per 1k images, outputs equal to batch 2048: "
          f"{torch.equal(forward(bs), ref)}")

m = lenet(True).train()
opt = torch.optim.Adam(m.parameters(), 2e-3)


def advtrain_step() -> None:
    with eval_mode(m):
        adv = perturb(m, x, y, "pgd", 0.3, 10, None, gen)
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(m(adv), y).backward()
    opt.step()


_, adv_ms = per_call(advtrain_step, max(args.steps // 4, 1))
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        advtrain_step()
ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
total = sum(e.self_cpu_time_total for e in ops)
print(f"advtrain step (PGD-10 + update, channels-last): {adv_ms:.1f} ms; self time: " +
      ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in ops[:5]))
