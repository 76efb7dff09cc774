"""The reference cases rebuilt from their trimmed copy are the published arrays, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.reference_cases import MANIFEST, REFERENCE_DIR, STORED_FILES, missing_files, rebuilt_keys, sha256


def test_every_reference_file_is_in_the_repository():
    assert missing_files() == []
    assert sum((REFERENCE_DIR / name).stat().st_size for name in STORED_FILES) < 4_000_000  # small enough to ship


@pytest.mark.parametrize("case", list(rebuilt_keys()))
def test_rebuilt_arrays_are_the_published_ones(reference_dir, case):
    expected = json.loads(MANIFEST.read_text())[case]
    assert sorted(expected) == sorted(rebuilt_keys()[case])
    with np.load(reference_dir / f"{case}.npz") as arrays:
        for key, digest in expected.items():
            assert sha256(arrays[key]) == digest, f"{case}/{key} differs from the published array"


def test_a_missing_reference_file_fails_instead_of_skipping(pytester, monkeypatch):
    import tests.reference_cases as cases
    monkeypatch.setattr(cases, "STORED_FILES", (*cases.STORED_FILES, "absent.npz"))
    pytester.makeconftest("from tests.conftest import reference_dir  # noqa: F401\n")
    pytester.makepyfile("def test_needs_the_cases(reference_dir):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*reference cases incomplete: absent.npz missing from*"])
