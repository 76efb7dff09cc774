"""The published implementation's reference cases: stored trimmed in tests/reference/, rebuilt whole for the tests.

The cases (tests/reference/README.md says how they were produced and what every key means) would
take 11 MB; what can be recomputed bit for bit is left out of the repository and rebuilt here:

- ``dist_raw``, ``dist_qq``, ``dist_gg`` of ``test_seed*.npz``: the README's definition D (torch
  float32, ``|x|^2 + |y|^2 - 2 x.y`` in one ``addmm``) of the stored ``query_feats`` / ``gallery_feats``;
- ``fusion_inputs_csv`` of ``fusion_seed0.npz``: Python's ``float`` of every value cell of the four
  stored ``fusion_seed0_model{k}.csv.gz`` (how the published fusion scripts parse them);
- ``out_*`` of ``fusion_seed0.npz``: the fusion outputs, five-decimal values, stored as int32
  ``units`` of 1e-5 (``out_units_*``); ``units / 1e5`` is the same float64 as parsing the decimal text.

``manifest.json`` holds the SHA-256 of every rebuilt array as the published files had it;
``tests/test_reference_cases.py`` checks the rebuilt arrays against it, so a rebuild that differs in
one bit fails there. ``rebuild(folder)`` writes the whole ``.npz`` files (and the CSVs) into
``folder``; the ``reference_dir`` fixture of conftest.py calls it once per session.

The trimmed files were made from the full ones with ``python tests/reference_cases.py FULL_DIR``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
MANIFEST = REFERENCE_DIR / "manifest.json"
TEST_CASES = ("test_seed0", "test_seed1")
FUSION_CASE = "fusion_seed0"
MODEL_CSVS = tuple(f"{FUSION_CASE}_model{k}.csv.gz" for k in range(4))
FUSION_OUTPUTS = ("sim4", "sim3", "dissim3", "dissim4", "final_sim4_dissim4")
DISTANCE_KEYS = ("dist_raw", "dist_qq", "dist_gg")
STORED_FILES = ("README.md", "manifest.json", *(f"{case}.npz" for case in (*TEST_CASES, FUSION_CASE)), *MODEL_CSVS)


def sha256(array: np.ndarray) -> str:
    """Digest of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def distance_d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The reference README's definition D: (a, d), (b, d) float32 -> (a, b) float32 squared Euclidean."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    base = xt.pow(2).sum(dim=1, keepdim=True) + yt.pow(2).sum(dim=1)[None, :]
    return torch.addmm(base, xt, yt.t(), beta=1.0, alpha=-2.0).numpy()


def csv_cells(path: Path) -> np.ndarray:
    """Every value cell of a (gzipped) distance CSV as Python's ``float`` parses it: header row and id column dropped."""
    with gzip.open(path, "rt", newline="") as file:
        rows = list(csv.reader(file))
    return np.array([[float(cell) for cell in row[1:]] for row in rows[1:]], dtype=np.float64)


def missing_files(folder: Path = REFERENCE_DIR) -> list[str]:
    """The stored files that ``folder`` lacks."""
    return [name for name in STORED_FILES if not (folder / name).is_file()]


def rebuilt_arrays(folder: Path = REFERENCE_DIR) -> dict[str, dict[str, np.ndarray]]:
    """{case name: {key: array}} with the left-out arrays recomputed (see the module docstring)."""
    cases = {}
    for name in TEST_CASES:
        with np.load(folder / f"{name}.npz") as stored:
            arrays = {key: stored[key] for key in stored.files}
        query, gallery = arrays["query_feats"], arrays["gallery_feats"]
        arrays |= {"dist_raw": distance_d(query, gallery), "dist_qq": distance_d(query, query),
                   "dist_gg": distance_d(gallery, gallery)}
        cases[name] = arrays
    with np.load(folder / f"{FUSION_CASE}.npz") as stored:
        arrays = {key: stored[key] for key in stored.files if not key.startswith("out_units_")}
        arrays |= {f"out_{output}": stored[f"out_units_{output}"] / 1e5 for output in FUSION_OUTPUTS}
    arrays["fusion_inputs_csv"] = np.stack([csv_cells(folder / file) for file in MODEL_CSVS])
    cases[FUSION_CASE] = arrays
    return cases


def rebuilt_keys() -> dict[str, tuple[str, ...]]:
    """The keys of each case that are recomputed rather than stored."""
    return {**{name: DISTANCE_KEYS for name in TEST_CASES},
            FUSION_CASE: ("fusion_inputs_csv", *(f"out_{output}" for output in FUSION_OUTPUTS))}


def rebuild(target: Path, source: Path = REFERENCE_DIR) -> Path:
    """Write the whole cases into ``target``: ``<case>.npz`` with every key of the published files, the input CSVs, the README."""
    target.mkdir(parents=True, exist_ok=True)
    for name, arrays in rebuilt_arrays(source).items():
        np.savez(target / f"{name}.npz", **arrays)
    for file in (*MODEL_CSVS, "README.md"):
        shutil.copyfile(source / file, target / file)
    return target


def trim(full: Path, target: Path = REFERENCE_DIR) -> None:
    """The one-time conversion: the full published case files in ``full`` -> the trimmed files and manifest in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name in TEST_CASES:
        with np.load(full / f"{name}.npz") as case:
            np.savez_compressed(target / f"{name}.npz", **{k: case[k] for k in case.files if k not in DISTANCE_KEYS})
            manifest[name] = {key: sha256(case[key]) for key in DISTANCE_KEYS}
    with np.load(full / f"{FUSION_CASE}.npz") as case:
        kept = {k: case[k] for k in case.files if k != "fusion_inputs_csv" and not k.startswith("out_")}
        for output in FUSION_OUTPUTS:
            units = np.rint(case[f"out_{output}"] * 1e5).astype(np.int32)
            if not np.array_equal(units / 1e5, case[f"out_{output}"]):
                raise SystemExit(f"out_{output} is not a matrix of five-decimal values")
            kept[f"out_units_{output}"] = units
        np.savez_compressed(target / f"{FUSION_CASE}.npz", **kept)
        manifest[FUSION_CASE] = {key: sha256(case[key]) for key in rebuilt_keys()[FUSION_CASE]}
    for file in MODEL_CSVS:
        shutil.copyfile(full / file, target / file)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    rebuilt = rebuilt_arrays(target)
    wrong = [f"{name}/{key}" for name, keys in manifest.items() for key, digest in keys.items() if sha256(rebuilt[name][key]) != digest]
    if wrong:
        raise SystemExit(f"not rebuilt bit for bit: {wrong}")


if __name__ == "__main__":
    trim(Path(sys.argv[1]))
