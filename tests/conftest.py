from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """The bundled data directory of the repository."""
    return DATA
