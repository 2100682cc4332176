"""The table of contents: every method file is imported here, which registers it."""

from bench.methods import backbones  # noqa: F401  (registers lenet, mlp, smallconvnet)
from bench.methods import msp, mcdropout  # noqa: F401
from bench.methods.registry import BACKBONES, METHODS

__all__ = ["METHODS", "BACKBONES"]
