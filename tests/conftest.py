"""Shared test fixtures: the published implementation's reference cases and small temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` beside the checkout; tests that need it skip when it is absent."""
    if not (REFERENCE_DIR / "README.md").is_file():
        pytest.skip(f"reference cases not found at {REFERENCE_DIR} (they live in ../shared/reference beside the checkout)")
    return REFERENCE_DIR
