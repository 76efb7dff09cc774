"""my_py/sim_fuse.py and my_py/dissim_fuse.py: the paper's 3-step fusion recipe against the reference case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plain_postprocess import plain_dissimilarity_fusion, plain_similarity_fusion

from reid.matrices import DistanceMatrix

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "my_py" / script), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_three_step_recipe_matches_the_reference(reference_dir, tmp_path):
    case = np.load(reference_dir / "fusion_seed0.npz")
    models = [reference_dir / f"fusion_seed0_model{k}.csv.gz" for k in range(4)]
    # the README's command sequence, run from another folder
    _ok(_run("sim_fuse.py", "--inputs", *models, "--output", tmp_path / "sim.csv", cwd=tmp_path))
    out = _ok(_run("dissim_fuse.py", "--inputs", *models, "--output", tmp_path / "dissim.csv", cwd=tmp_path))
    assert "uniform" in out and ": 12" in out and ": 6" in out  # the published script's two counters
    _ok(_run("sim_fuse.py", "--inputs", tmp_path / "sim.csv", tmp_path / "dissim.csv", "--output", tmp_path / "final.csv", cwd=tmp_path))
    for name, file in (("sim4", "sim.csv"), ("dissim4", "dissim.csv"), ("final_sim4_dissim4", "final.csv")):
        written = DistanceMatrix.read_csv(tmp_path / file)
        assert np.abs(written.values - case[f"out_{name}"]).max() <= 1e-5, name
        np.testing.assert_array_equal(written.query_ids, case["query_ids"])
        np.testing.assert_array_equal(written.gallery_ids, case["gallery_ids"])
    assert (tmp_path / "final.csv").read_text().startswith("0," + ",".join(map(str, case["gallery_ids"][:3])))
    assert json.loads((tmp_path / "dissim.config.json").read_text())["topk"] == 15


def test_three_model_outputs_and_options(reference_dir, tmp_path):
    case = np.load(reference_dir / "fusion_seed0.npz")
    models = [reference_dir / f"fusion_seed0_model{k}.csv.gz" for k in range(3)]
    _ok(_run("sim_fuse.py", "--inputs", *models, "--output", tmp_path / "sim3.csv.gz", cwd=tmp_path))
    _ok(_run("dissim_fuse.py", "--inputs", *models, "--output", tmp_path / "dissim3.csv", cwd=tmp_path))
    assert np.abs(DistanceMatrix.read_csv(tmp_path / "sim3.csv.gz").values - case["out_sim3"]).max() <= 1e-5
    assert np.abs(DistanceMatrix.read_csv(tmp_path / "dissim3.csv").values - case["out_dissim3"]).max() <= 1e-5
    # --weights and --topk against the plain README F1 / F2 (which give the reference outputs at the defaults)
    inputs = case["fusion_inputs_csv"][:3]
    np.testing.assert_array_equal(plain_similarity_fusion(inputs), case["out_sim3"])
    np.testing.assert_array_equal(plain_dissimilarity_fusion(inputs, topk=15)[0], case["out_dissim3"])
    _ok(_run("sim_fuse.py", "--inputs", *models[:2], "--weights", 3, 1, "--output", tmp_path / "w.csv", cwd=tmp_path))
    weighted = DistanceMatrix.read_csv(tmp_path / "w.csv").values
    np.testing.assert_array_equal(weighted, plain_similarity_fusion(inputs[:2], weights=[3, 1]))
    assert np.abs(weighted - np.round((3 * inputs[0] + inputs[1]) / 4, 5)).max() <= 1e-5  # by hand
    _ok(_run("dissim_fuse.py", "--inputs", *models, "--topk", 5, "--output", tmp_path / "d5.csv", cwd=tmp_path))
    top5 = DistanceMatrix.read_csv(tmp_path / "d5.csv").values
    np.testing.assert_array_equal(top5, plain_dissimilarity_fusion(inputs, topk=5)[0])
    assert np.abs(top5 - case["out_dissim3"]).max() > 1e-3  # another depth, other weights


@pytest.mark.parametrize("script", ["sim_fuse.py", "dissim_fuse.py"])
def test_mismatched_or_malformed_inputs_are_reported(script, tmp_path):
    a = DistanceMatrix(np.ones((2, 3)), [1, 2], [5, 5, 6]).write_csv(tmp_path / "a.csv")
    b = DistanceMatrix(np.ones((2, 3)), [1, 2], [5, 6, 6]).write_csv(tmp_path / "b.csv")
    result = _run(script, "--inputs", a, b, "--output", tmp_path / "out.csv", cwd=tmp_path)
    assert result.returncode != 0
    assert "b.csv" in result.stderr and "gallery position 1" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("0,5,5,6\n1,1.0,1.0\n")
    result = _run(script, "--inputs", a, bad, "--output", tmp_path / "out.csv", cwd=tmp_path)
    assert result.returncode != 0 and "bad.csv: line 2" in result.stderr
    assert not (tmp_path / "out.csv").exists()

