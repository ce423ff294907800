"""Shared fixtures: the real data beside the project, and tiny random reference models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $SEGGPT_LAB_SHARED_DATA): skipped without it, except in CI, where it must exist."""
    path = Path(os.environ.get("SEGGPT_LAB_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        message = f"real test data not found at {path} (set SEGGPT_LAB_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run with ../shared beside the checkout")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """pytest's own command-line arguments are not the CLI's: tests call `main([...])` with theirs."""
    monkeypatch.setattr("sys.argv", ["seggpt-lab"])
