"""fgvcbench: a plugin-based benchmark suite for fine-grained visual classification."""

__version__ = "0.1.0"
