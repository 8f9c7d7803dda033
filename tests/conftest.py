import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: No property test has a wall-clock bound: hypothesis' default 200-ms deadline fails on
#: the first call that JIT-compiles numba code with a cold cache (tree_first: 321 ms), and
#: its too-slow health check on a loaded machine. Speed is what benchmarks/ measure.
settings.register_profile("scalelab", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SCALELAB_HYPOTHESIS_PROFILE", "scalelab"))

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_data() -> Path:
    """The shared copy of the paper's patterns (not committed to this repository)."""
    path = SHARED / "data" / "hslinucb"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path

