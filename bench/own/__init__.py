"""Bringing your own: a classifier you trained (model: it seen as a bench backbone; model_files: loading it from a
TorchScript, torch.export or Python file for ``bench run --model``; evaluate: ``bench.evaluate``) and outputs you saved
(score: ``bench.score``, every metric from logits or probabilities alone). docs/byom.md is the guide.
"""
