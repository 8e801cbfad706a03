"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_candidates() -> list[Path]:
    """Where the real datasets may be: $FUNCML_SHARED_DATA, <repo>/../shared/data, /work/shared/data."""
    env = os.environ.get("FUNCML_SHARED_DATA")
    out = [Path(env)] if env else []
    out += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (see ``../shared/data/README.md``); tests using it skip when it is absent."""
    for cand in shared_data_candidates():
        if cand.is_dir():
            return cand
    pytest.skip("real data not found (set FUNCML_SHARED_DATA or place it at ../shared/data)")
