"""bench/gpu_check.py on the CPU: its guarded run and report, its measurements on the small twin, the
datasheet peaks, the one-line missing-requirement error, and the ``cuda`` marker that selects step 2's tests."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989), ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA A10", 125),
    ("NVIDIA L4", 121), ("NVIDIA L40S", 362), ("NVIDIA L40", 181), ("NVIDIA A10G", None), ("Tesla V100-SXM2-16GB", None),
])
def test_dense_bf16_peak_of_known_gpus_from_the_datasheets(name, peak):
    assert gpu_check.bf16_peak_tflops(name) == peak


def test_a_missing_requirement_is_one_line_naming_it_and_how_to_install(monkeypatch, capsys):
    real = importlib.metadata.version

    def version(name):
        if name in ("tyro", "open_clip_torch"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(SystemExit) as stopped:
        gpu_check.stop_if_missing()
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: missing requirement open_clip_torch>=2.24,<4, tyro>=0.9,<2")
    assert "bash bench/gpu_wheels.sh" in error and "pip install -r requirements.txt" in error


def test_the_cuda_marker_selects_the_tests_that_need_a_gpu(pytester):
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers = cuda: needs a CUDA GPU\n")
    pytester.makepyfile(test_devices="""
        import pytest, torch

        @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
        def test_skips_without_a_gpu():
            pass

        @pytest.mark.parametrize("device", ["cpu", "cuda", torch.device("cuda", 1)])
        def test_on_a_device(device):
            pass

        @pytest.mark.skipif(True, reason="not about GPUs")
        def test_skipped_for_another_reason():
            pass
    """)
    result = pytester.runpytest("-m", "cuda", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_skips_without_a_gpu", "*test_on_a_device?cuda?", "*test_on_a_device?device2?",
                                 "3/5 tests collected*"])


def test_model_flops_leave_out_the_recomputation_of_gradient_checkpointing():
    encoders = [gpu_check.build_model({"model": "test_vit", "img_size": 32, "grad_checkpointing": on}) for on in (False, True)]
    plain, checkpointed = (gpu_check.flops_per_image(e, torch.device("cpu"), None) for e in encoders)
    assert plain == checkpointed > 0
    assert encoders[1].backbone.grad_checkpointing and not encoders[0].backbone.grad_checkpointing


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")  # the default workers, on 2 cores
def test_quick_measurements_on_the_small_twin(twin_data, tmp_path):
    """The measurements of steps 3-5 and 7, each run as its process would (quick sizes), their rows read back."""
    setup = gpu_check.Setup(gpu_check.Configuration(quick=True, work_dir=tmp_path, data_dir=twin_data))
    found = {}
    for name, task, kwargs in (("bf16", "throughput", {"mode": "bf16"}), ("giant", "throughput", {"mode": "giant"}),
                               ("loader", "loader", {}), ("extraction", "extraction", {}), ("rerank", "rerank", {})):
        rows = gpu_check.Rows(tmp_path / f"{name}.json", "step", "here")
        gpu_check.TASKS[task](setup, rows, **kwargs)
        found[name] = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
    for name in ("bf16", "giant"):
        (row,) = found[name]
        assert row["status"] == "ok" and row["figures"]["images_per_s"] == pytest.approx(2 * row["figures"]["pairs_per_s"])
        assert row["figures"]["flops_per_image"] > 0 and "pairs/s" in row["result"]
    assert found["loader"][0]["figures"]["images_per_s"] > 0 and found["loader"][0]["figures"]["workers"] == 4
    assert found["extraction"][0]["what"] == "feature extraction fp32" and found["extraction"][0]["figures"]["images_per_s"] > 0
    reranked = {row["what"].rsplit(": ", 1)[-1]: row for row in found["rerank"]}
    assert set(reranked) == {"classic", "hard_weight"} and len(found["rerank"]) == 2
    if not CUDA:
        assert found["extraction"][1]["result"] == "skipped: no CUDA"
        assert all(row["status"] == "ok" and "GPU vs CPU: skipped: no CUDA" in row["result"] for row in found["rerank"])


def test_quick_check_reports_a_failure_in_one_line_and_runs_the_next_step(tmp_path, capsys):
    """The whole check (its measurements in their own processes): data that is not there fails its row (one
    line naming the table and the fix), the step that needs it is skipped, the next step still runs; the
    report files and the printed table."""
    empty = tmp_path / "no_data"
    empty.mkdir()
    out = tmp_path / "out"
    config = gpu_check.Configuration(quick=True, steps=("loader", "rerank"), data_dir=empty, work_dir=tmp_path / "work",
                                     output_dir=out)
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(config)
    assert stopped.value.code == 1  # a step failed
    printed = capsys.readouterr().out
    report = json.loads((out / "gpu_check.json").read_text())
    rows = {(row["step"], row["what"]): row for row in report["rows"]}
    data = rows[("data", "data for steps 3-6")]
    assert data["status"] == "failed" and "\n" not in data["result"]
    assert data["result"] == (f"{empty / 'data_reid' / 'train_df.csv'} not found: run python preprocess_data.py --data-dir "
                              f"{empty} (or leave out --data-dir to draw the synthetic twin)")
    assert rows[("4 data loading", "training loader")]["result"] == "skipped: no data (see the data row)"
    reranked = [row for row in report["rows"] if row["step"] == "7 re-ranking"]
    assert len(reranked) == 2 and all(row["status"] == "ok" for row in reranked) and reranked[0]["seconds"] > 0
    assert report["rows"][0]["step"] == "1 environment" and report["counts"]["failed"] == 1
    if not CUDA:
        assert rows[("1 environment", "GPU")]["result"] == "skipped: no CUDA"
        assert all(row["machine"].startswith("CPU (") for row in report["rows"])
    table = (out / "gpu_check.md").read_text()
    assert "| step | what | status | result | machine | s |" in table and table.splitlines()[-1] in printed
    assert "$ " in (out / "gpu_check.log").read_text()  # every command with its output
