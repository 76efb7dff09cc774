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


@pytest.fixture(scope="session")
def twin_data(tmp_path_factory) -> Path:
    """The small synthetic twin (seed 0) with train_df.csv and challenge_df.csv, drawn once per session;
    returns data_dir. Read-only for the tests that share it."""
    from reid.catalog import challenge_frame, training_frame
    from reid.synthetic import generate_twin

    data_dir = tmp_path_factory.mktemp("twin_data")
    data_reid = generate_twin(data_dir, "small", seed=0, workers=2, progress=False)
    training_frame(data_reid).to_csv(data_reid / "train_df.csv", index=False)
    challenge_frame(data_reid).to_csv(data_reid / "challenge_df.csv", index=False)
    return data_dir
