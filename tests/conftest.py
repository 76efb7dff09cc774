"""Shared test fixtures: the published implementation's reference cases and small temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reference_cases import REFERENCE_DIR, missing_files, rebuild

REPO_ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ("pytester",)  # tests/test_reference_cases.py runs a small session of its own


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A folder with the whole reference cases (``<case>.npz`` with every published key, the input CSVs),
    rebuilt once per session from the trimmed copy in tests/reference/. A missing file there is a failure."""
    missing = missing_files()
    if missing:
        pytest.fail(f"reference cases incomplete: {', '.join(missing)} missing from {REFERENCE_DIR} "
                    f"(they are part of the repository: restore them with git checkout -- tests/reference)")
    return rebuild(tmp_path_factory.mktemp("reference"))
