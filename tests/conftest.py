"""Shared fixtures. `data_root`: the real SBU/FPHA files, which live outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """<repo>/../shared/data, or env PMP_DATA_ROOT. Missing: a failure under CI=true, else a skip."""
    root = Path(os.environ.get("PMP_DATA_ROOT") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        msg = f"real data not found at {root} (set PMP_DATA_ROOT)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root
