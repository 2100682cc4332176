"""Baseline: plain cross-entropy training; confidence = maximum softmax probability (MCP)."""

from bench.methods.core.base import ConfidenceMethod, Training, register


@register("msp", "Baseline: max softmax probability of the plainly trained classifier (Hendrycks & Gimpel 2017)")
class MSP(ConfidenceMethod):
    training = Training.SHARED_BASELINE
    posthoc = True
