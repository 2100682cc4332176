"""The registries of methods and backbones (eval sets live in bench.datasets.evalsets)."""

from bench.registry import Registry

METHODS: Registry = Registry("method")
BACKBONES: Registry = Registry("backbone")
