"""The `scalelab` command line."""

from scalelab.experiments.cli import main

__all__ = ["main"]
