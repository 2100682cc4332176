"""bench: a benchmark suite for confidence methods. Run ``python -m bench --help``."""

__version__ = "0.1.0"
