from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_data() -> Path:
    """The shared copy of the paper's patterns (not committed to this repository)."""
    path = SHARED / "data" / "hslinucb"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
