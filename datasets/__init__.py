"""Data: IDX reader, embedded MNIST / Fashion-MNIST, splits, and the registry of evaluation sets."""

# The table of contents of the evaluation-set modules: importing each registers its sets in evalsets.EVAL_SETS.
from bench.datasets import evalsets  # noqa: E402,F401  (mnist, ood:*)
from bench.datasets import occlusion  # noqa: E402,F401  (pmnist:*, occlusion:random-squares=F)
from bench.datasets import adversarial  # noqa: E402,F401  (fgsm:*, pgd:*, fgsm-transfer:*)
from bench.datasets import uap  # noqa: E402,F401  (uap:xi=...,p=inf|2)
from bench.datasets import fooling  # noqa: E402,F401  (fooling)
from bench.datasets import user_ood  # noqa: E402,F401  (--ood NAME=PATH -> ood:NAME)
from bench.datasets import dadc  # noqa: E402,F401  (dadc:RUN, examples collected by bench serve)
from bench.datasets import mnistc  # noqa: E402,F401  (mnistc:<corruption>, MNIST-C)
from bench.datasets import hendrycks  # noqa: E402,F401  (hg:gaussian, Hendrycks & Gimpel's unclipped noise)
from bench.datasets import openood_far  # noqa: E402,F401  (ood:texture, ood:tin, ood:places365 from --data-dir)
