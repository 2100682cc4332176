"""Exact k-NN search for the `knn` detector: pytorch-ood's scikit-learn brute force against chunked torch variants
(matrix product per chunk of queries, then topk or kthvalue), and the matrix product alone, the floor of any exact
brute-force search (docs/detectors.md, "Cost"). Not a pytest file: run it as

    python tests/benchmarks/time_knn_search.py [--queries 4000] [--bank 54000] [--dim 50] [--k 50]

Features are random ReLU vectors of lenet's shape (the timing does not depend on the values). Every variant's
distances are checked against pytorch-ood's; times are the best of 3, in ms per 1,000 queries.
"""

from __future__ import annotations

import argparse
import time

import torch
from pytorch_ood.detector import KNN

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--queries", type=int, default=4000)
p.add_argument("--bank", type=int, default=54000)
p.add_argument("--dim", type=int, default=50)
p.add_argument("--k", type=int, default=50)
args = p.parse_args()

gen = torch.Generator().manual_seed(0)
bank = torch.relu(torch.randn(args.bank, args.dim, generator=gen))
queries = torch.relu(torch.randn(args.queries, args.dim, generator=gen))
bank_n, queries_n = (torch.nn.functional.normalize(t, dim=1) for t in (bank, queries))
detector = KNN(None, k=args.k, algorithm="brute").fit_features(bank, torch.zeros(args.bank, dtype=torch.long))


def best_of_3(fn):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000 * 1000 / args.queries, out


def chunked(chunk: int, select: str) -> torch.Tensor:
    out = []
    for i in range(0, args.queries, chunk):
        sim = queries_n[i:i + chunk] @ bank_n.T
        if select == "topk":
            kth = sim.topk(args.k, dim=1).values[:, -1]
        else:  # k-th largest similarity = k-th smallest of its negation
            kth = -(-sim).kthvalue(args.k, dim=1).values
        out.append(torch.sqrt(torch.clamp(2 - 2 * kth, min=0)))  # unit vectors: |a-b|^2 = 2 - 2 a.b
    return torch.cat(out)


ms, reference = best_of_3(lambda: detector.predict_features(queries).float())
print(f"{args.queries} queries, bank {args.bank} x {args.dim}, k {args.k}, torch threads {torch.get_num_threads()}")
print(f"pytorch-ood (scikit-learn brute): {ms:6.0f} ms per 1k queries")
for chunk in (1024, 256, 64, 16):
    for select in ("topk", "kthvalue"):
        ms, out = best_of_3(lambda: chunked(chunk, select))
        diff = (out - reference).abs().max().item()
        print(f"torch chunk {chunk:4d} + {select:8s}:  {ms:6.0f} ms per 1k queries (max |difference| {diff:.1e})")
for chunk in (1024, 64, 16):
    ms, _ = best_of_3(lambda: [queries_n[i:i + chunk] @ bank_n.T for i in range(0, args.queries, chunk)])
    print(f"matrix product alone, chunk {chunk:4d}: {ms:6.0f} ms per 1k queries")
