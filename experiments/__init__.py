"""The experiments layer: typed configs and their resolution, the runner, metrics,
reports, the Gymnasium env, the paper's experiments. It composes the others and holds no
step loop and no backend. The public API is :mod:`scalelab` (``from scalelab import ...``).
"""

from __future__ import annotations

from pathlib import Path


def configs_dir() -> Path:
    """The folder of the ready experiment configs (``experiments/configs``)."""
    return Path(__file__).parent / "configs"
