"""One prepared check of a GPU machine: every CUDA path of the project exercised and measured, in one command.

    python bench/gpu_check.py                                 # the full check: about 8 minutes on one H200
    python bench/gpu_check.py --quick                         # the same steps, tiny models and sizes: < 2 min on a CPU
    python bench/gpu_check.py --steps environment rerank --output-dir outputs/gpu_rerank

Steps, in this order, each measurement timed and guarded (a failure is one line in its row and the
next one runs; without a GPU, what needs one says "skipped: no CUDA"):

1. environment: GPU, memory, torch / CUDA / cuDNN, bf16, the attention kernels of the timm ViTs, a bf16 matmul
2. the test suite's CUDA tests (``python -m pytest -m cuda``), run and counted
3. training speed of EVA-L/336 (random weights, batches of 32 pairs from the full-scale twin): bf16
   autocast, the published fp16 + gradient scaler, bf16 + torch.compile; EVA-giant with gradient
   checkpointing at 8 pairs. Pairs/s, images/s, peak GPU memory, model FLOP utilisation
4. the training loader alone (decode, letterbox, sharpen, erasing) with the default workers
5. evaluation: feature extraction images/s at fp32 and bf16, and the mAP of step 6's epoch-1 model
   evaluated both ways (evaluate.py --eval-precision)
6. a short real training (train_our_post.py): ViT-S/16 from random weights on the full twin, epoch 1,
   then resumed from last.pth for epochs 2 and 3, evaluated on the GPU after every epoch
7. re-ranking on the GPU: both variants at challenge size (against the CPU result) and at MSMT17 size

Step 6 runs before step 5 (which reads its epoch-1 checkpoint); the report keeps the order above.
The full-scale twin is drawn into --work-dir first and kept there for the next run. Each measurement
runs in a process of its own under a time limit, and the whole run under --budget: what overruns is
stopped and reported, and the report is still written. After every measurement gpu_check.json,
gpu_check.md (the table) and gpu_check.log (each command and its output) are rewritten in
--output-dir; the table is printed at the end. Exit status 0: nothing failed; 1: a measurement
failed or was stopped; 2: a missing requirement or a bad flag.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import typing
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(BENCH)]  # run from anywhere without installing; bench_scale beside this file


def requirement_lines() -> list[str]:
    """The requirements of requirements.txt, without comments and blank lines."""
    return list(filter(None, (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())))


def missing_requirements() -> list[str]:
    """The lines of requirements.txt (and pytest, for step 2) whose package is not installed here."""
    missing = []
    for requirement in [*requirement_lines(), "pytest"]:
        try:
            importlib.metadata.version(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def stop_if_missing() -> None:
    """One line naming each missing requirement and how to install it, then exit 2: before anything imports them."""
    missing = missing_requirements()
    if not missing:
        try:
            import tyro  # noqa: F401  (every script parses its flags with it; it imports its own dependencies)
        except ImportError as error:
            missing = [f"a dependency of tyro ({error})"]
    if missing:
        print(f"error: missing requirement {', '.join(missing)}: pip install -r requirements.txt -r requirements-dev.txt; "
              "on a machine without internet: run bash bench/gpu_wheels.sh where there is internet, bring .whl/ here, then "
              "pip install --no-index --no-deps --target /tmp/site .whl/*.whl and export PYTHONPATH=/tmp/site "
              "(README: Checking a GPU machine)", file=sys.stderr)
        raise SystemExit(2)


stop_if_missing()

# ---- the package internals this check uses, all here (the package is being reorganised: a module that moves
# ---- is one edit here)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from bench_scale import SIZES as FEATURE_SIZES  # noqa: E402  (queries, gallery, dim, identities, noise)

import train_our_post  # noqa: E402  (its Configuration: the training defaults, from model to workers)
from reid.config import config_from_dict, config_to_dict  # noqa: E402
from reid.data import player_labels  # noqa: E402
from reid.devices import resolve_device  # noqa: E402
from reid.engine import PairModel, autocast_dtype, build_scheduler, describe_precision, make_grad_scaler, train_one_epoch  # noqa: E402
from reid.errors import InputError, Interrupted, RunFailure, message, run_script  # noqa: E402
from reid.files import write_text_atomically  # noqa: E402
from reid.inference import features_for_frame  # noqa: E402
from reid.layout import IMAGE_SUFFIX, TRAIN_TABLE, data_reid, load_train_frame, query_gallery, split_train_test  # noqa: E402
from reid.losses import ReidLoss  # noqa: E402
from reid.models import Encoder, build_model  # noqa: E402
from reid.retrieval.rerank import rerank  # noqa: E402
from reid.synthetic.features import clustered_features  # noqa: E402
from reid.training import set_gpu_kernels, training_batches  # noqa: E402

StepName = Literal["environment", "cuda_tests", "throughput", "loader", "evaluation", "training", "rerank"]
STEP_NAMES: tuple[StepName, ...] = typing.get_args(StepName)
STEP_LABELS = {"environment": "1 environment", "cuda_tests": "2 CUDA tests", "data": "data", "throughput": "3 training speed",
               "loader": "4 data loading", "evaluation": "5 evaluation", "training": "6 short training", "rerank": "7 re-ranking"}
DEFAULTS = train_our_post.Configuration()
COMPILE_LIMIT_S = 60  # torch.compile must finish its first step within this, or the mode is reported as not compiling
RERANK_TOLERANCE = 1e-5  # GPU and CPU re-rankings agree within this (the tests' tolerance)
TARGETS_S = {"challenge": 1.0, "msmt17": 30.0}  # the earlier scale issue's targets, seconds per re-ranking variant
# Dense bf16 tensor-core peaks from NVIDIA's datasheets (TFLOP/s, without sparsity); the first pattern
# found in the GPU's name wins (H100 PCIe before H100, L40S before L40).
BF16_PEAK_TFLOPS = ((r"\bB200\b", 2250), (r"\bGH200\b", 989), (r"\bH200\b", 989), (r"\bH100\b.*\bPCIe\b", 756),
                    (r"\bH100 NVL\b", 835), (r"\bH100\b", 989), (r"\bH800\b", 989), (r"\bA100\b", 312), (r"\bA800\b", 312),
                    (r"\bL40S\b", 362), (r"\bL40\b", 181), (r"\bL4\b", 121), (r"\bA10\b", 125))


@dataclass
class Configuration:
    """Check a GPU machine: every CUDA path of the project exercised and measured."""

    quick: bool = False
    """Tiny models and sizes through the same steps: under 2 minutes on a CPU (CI, a first try)."""
    steps: tuple[StepName, ...] = STEP_NAMES
    """Steps to run (environment always runs: it names the machine of every figure)."""
    output_dir: Path = Path("outputs/gpu_check")
    """Where gpu_check.json, gpu_check.md and gpu_check.log go (each run replaces them)."""
    work_dir: Path | None = None
    """Scratch folder: the twin (kept for the next run), the training run, each process's log; None = <temp>/reid_gpu_check."""
    data_dir: Path | None = None
    """A folder holding data_reid/ with train_df.csv (e.g. the real data) for steps 3-6; None = the twin, drawn in work_dir."""
    budget: float | None = None
    """Seconds for the whole run; what still runs then is stopped and reported. None = 480 (150 with --quick)."""


@dataclass(frozen=True)
class Sizes:
    """What the steps run: the full check or the --quick one."""

    twin: str  # scale of the synthetic twin
    model: str  # steps 3-5: the paper's encoder, random weights
    img_size: int | None  # its input side; None = its own
    pairs: int  # step 3: pairs per training step
    warmup: int  # step 3: steps before timing (compile, autotuning, allocator)
    steps: int  # step 3: timed steps
    giant: str  # step 3: the largest encoder, with gradient checkpointing
    giant_pairs: int
    giant_steps: int
    loader_batches: int  # step 4: batches timed after the first
    small_model: str  # step 6, from random weights
    small_flags: tuple[str, ...]  # step 6: train_our_post.py flags beside the model (a constant lr: random weights learn
    #                               faster than with the fine-tuning default, and resuming changes no schedule)
    threads: int | None  # torch threads of every process (OMP_NUM_THREADS); None = torch's default
    rerank_sizes: tuple[str, ...]  # step 7: bench_scale sizes; the first is also re-ranked on the CPU to compare
    budget: float  # seconds for the whole run
    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)  # per measurement: (expected, limit)


FULL = Sizes(twin="full", model=DEFAULTS.model, img_size=None, pairs=DEFAULTS.batch_size, warmup=5, steps=50,
             giant="eva_giant_patch14_336.clip_ft_in1k", giant_pairs=8, giant_steps=20, loader_batches=40,
             small_model="vit_small_patch16_224", small_flags=("--lr", "1e-4", "--warmup-epochs", "0", "--scheduler", "constant"),
             threads=None, rerank_sizes=("challenge", "msmt17"),
             budget=480,  # expected on one H200 with 16 cores: about 450 s
             seconds={"environment": (8, 45), "cuda_tests": (30, 150), "data": (25, 240), "throughput_bf16": (30, 75),
                      "throughput_fp16": (30, 75), "throughput_compile": (80, 150), "throughput_giant": (25, 90),
                      "loader": (12, 45), "training": (80, 200), "extraction": (20, 60), "evaluation": (25, 90),
                      "rerank": (80, 200)})
QUICK = Sizes(twin="small", model="test_vit", img_size=32, pairs=8, warmup=1, steps=4, giant="test_vit", giant_pairs=4,
              giant_steps=2, loader_batches=6, small_model="test_resnet",
              small_flags=("--img-size", "48", "24", "--lr", "2e-3", "--warmup-epochs", "0", "--scheduler", "constant",
                           "--num-workers", "1"),
              threads=1,  # tiny models gain nothing from a second thread and wait for it on a busy CPU (demo.sh)
              rerank_sizes=("quick",), budget=150,  # expected on 2 cores: about 80 s
              seconds={"environment": (8, 30), "cuda_tests": (1, 60), "data": (8, 60), "throughput_bf16": (6, 40),
                       "throughput_fp16": (6, 40), "throughput_compile": (30, 60), "throughput_giant": (6, 40), "loader": (6, 30),
                       "training": (35, 90), "extraction": (6, 30), "evaluation": (6, 60), "rerank": (7, 40)})


@dataclass
class Setup:
    """Where one run reads and writes, and on what it computes (the same in the main process and in each measurement's)."""

    config: Configuration

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.config.quick else FULL

    @property
    def work(self) -> Path:
        return self.config.work_dir or Path(tempfile.gettempdir()) / "reid_gpu_check"

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir or self.work / f"twin_{self.sizes.twin}"

    @property
    def cuda(self) -> bool:
        return torch.cuda.is_available()

    @property
    def device(self) -> torch.device:
        return resolve_device("auto")


@dataclass
class Row:
    """One line of the report: a figure (or a failure, a skip) and the machine it came from."""

    step: str
    what: str
    status: Literal["ok", "failed", "stopped", "skipped", "missed"]  # missed: measured, but slower than its target
    result: str
    machine: str = ""
    seconds: float | None = None  # wall time of the measurement (its process included), on its first row
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """One guarded, timed unit of the check: its rows come from ``work``."""

    step: str
    key: str  # its entry in Sizes.seconds
    what: str
    work: Callable[[], Any]
    needs_cuda: bool = False
    needs_data: bool = False


class Overrun(Exception):
    """A measurement ran past the time it was allowed."""


class StepFailed(Exception):
    """A measurement failed; the message is its one-line cause."""


def cpu_name() -> str:
    return f"CPU ({os.cpu_count()} cores)"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def bf16_peak_tflops(gpu: str) -> float | None:
    """The datasheet's dense bf16 peak of the GPU named ``gpu`` (TFLOP/s); None for a GPU not in the table."""
    return next((float(peak) for pattern, peak in BF16_PEAK_TFLOPS if re.search(pattern, gpu)), None)


def one_line(error: BaseException) -> str:
    """What a row says about a failure: the error's first line, with its type unless it is one of the project's."""
    text = message(error).strip() if isinstance(error, (InputError, RunFailure, OSError)) else f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines() or [type(error).__name__]
    return lines[0][:300] + (" (...)" if len(lines) > 1 else "")


def cause_of(output: str, status: int) -> str:
    """The one-line cause of a process that failed: its last ``error:`` line, else its last line, and the exit status."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    last = (errors or lines or ["no output"])[-1].removeprefix("error:").strip()
    how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    return f"{last[:300]} ({how})"


# ================================================================================================
# The main process: steps, guards, report
# ================================================================================================


class Check(Setup):
    """One run: each measurement in a guarded, timed process; the rows so far written out after each one."""

    def __init__(self, config: Configuration) -> None:
        super().__init__(config)
        self.started = time.monotonic()
        self.started_at = datetime.now(timezone.utc)
        self.deadline = self.started + self.budget
        self.measure_deadline = self.deadline
        self.rows: list[Row] = []
        self.figures: dict[str, dict[str, Any]] = {}  # by measurement: what later steps compare with
        self.gpu = "GPU"  # named by the environment step
        self.commit = _commit()
        self.data_ready = False
        for folder in ("logs", "results"):
            (self.work / folder).mkdir(parents=True, exist_ok=True)
        (self.work / "epoch1.pth").unlink(missing_ok=True)  # step 5 reads this run's, never an earlier one
        config.output_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(config.output_dir / "gpu_check.log", "w", encoding="utf-8")

    @property
    def machine(self) -> str:
        return self.gpu if self.cuda else cpu_name()

    # ---------------------------------------------------------------- guards

    def measure(self, measurement: Measurement, reserved: float) -> None:
        """Run one measurement (its ``work`` adds its rows) under the time it is allowed: at least its expected
        time, at most its limit, and never the time the later ones are expected to need (``reserved``) unless
        that is all there is. A failure, an overrun or a skip becomes a row; the report is rewritten after it."""
        step, what = measurement.step, measurement.what
        if measurement.needs_cuda and not self.cuda:
            return self.add(Row(step, what, "skipped", "skipped: no CUDA"))
        if measurement.needs_data and not self.data_ready:
            return self.add(Row(step, what, "skipped", "skipped: no data (see the data row)"))
        expected, limit = self.sizes.seconds[measurement.key]
        left = self.deadline - time.monotonic()
        allowed = min(limit, max(expected, left - reserved), left)
        if allowed < 5:
            return self.add(Row(step, what, "skipped", f"skipped: the run's budget of {self.budget:.0f} s is spent"))
        self.measure_deadline = time.monotonic() + allowed
        started, first = time.monotonic(), len(self.rows)
        try:
            measurement.work()
        except Overrun:
            self.add(Row(step, what, "stopped", f"stopped after {allowed:.0f} s, the time it was allowed", self.machine))
        except StepFailed as failure:
            self.add(Row(step, what, "failed", str(failure), self.machine))
        except KeyboardInterrupt:
            self.add(Row(step, what, "stopped", "interrupted", self.machine))
            raise
        except Exception as error:  # a bug of this check: the row says what, the log has the traceback
            self.log.write(traceback.format_exc())
            self.add(Row(step, what, "failed", one_line(error), self.machine))
        finally:
            if len(self.rows) > first:
                self.rows[first].seconds = time.monotonic() - started
            self.write_report()

    def add(self, row: Row) -> None:
        row.machine = row.machine or self.machine
        self.rows.append(row)
        print(f"[{time.monotonic() - self.started:5.0f} s] {row.step} | {row.what} | {row.status} | {row.result}", flush=True)
        self.write_report()

    def run_process(self, argv: list[str], name: str) -> tuple[int, str]:
        """Run ``argv`` in its own process group until the measurement's time is up (then ``Overrun``);
        returns (exit status, output). Whatever it leaves running (loader workers, compile workers) is ended."""
        log_path = self.work / "logs" / f"{name}.log"
        env = os.environ | {"PYTHONUNBUFFERED": "1"} | ({"OMP_NUM_THREADS": str(self.sizes.threads)} if self.sizes.threads else {})
        with open(log_path, "w", encoding="utf-8") as output:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, env=env)
            try:
                status = process.wait(timeout=max(1.0, self.measure_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise Overrun() from None
            finally:
                _end_group(process)
        text = log_path.read_text(encoding="utf-8", errors="replace")
        self.log.write(f"$ {' '.join(map(str, argv))}\n{text}\n")
        self.log.flush()
        return status, text

    def command(self, argv: list[str], name: str) -> str:
        """A stage script or pytest: its output; ``StepFailed`` with its last error line when it fails."""
        status, text = self.run_process([sys.executable, *map(str, argv)], name)
        if status != 0:
            raise StepFailed(cause_of(text, status))
        return text

    def child(self, step: str, task: str, name: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Run the measurement ``task`` in its own process; its rows are added (also those written before it
        failed or was stopped) and their figures returned."""
        name = name or task
        result_path = self.work / "results" / f"{name}.json"
        result_path.unlink(missing_ok=True)
        settings = {"config": config_to_dict(self.config), "task": task, "kwargs": kwargs, "result": str(result_path), "step": step}
        entry = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import gpu_check; gpu_check.child_main(sys.argv[1])"
        try:
            status, text = self.run_process([sys.executable, "-c", entry, json.dumps(settings)], name)
        finally:
            written = json.loads(result_path.read_text()) if result_path.is_file() else {"rows": []}
            for row in written["rows"]:
                self.add(Row(**row))
            self.figures[name] = {k: v for row in written["rows"] for k, v in row["figures"].items()}
        if "error" in written:
            raise StepFailed(written["error"])
        if status != 0:
            raise StepFailed(cause_of(text, status))
        return self.figures[name]

    # ---------------------------------------------------------------- steps

    def plan(self) -> list[Measurement]:
        """The measurements of the chosen steps, in the order they run (step 6 before step 5, which reads its checkpoint)."""
        steps, quick, sizes = set(self.config.steps), self.config.quick, self.sizes
        label = STEP_LABELS
        planned = [Measurement(label["environment"], "environment", "machine", self.environment)]
        if "cuda_tests" in steps:
            planned.append(Measurement(label["cuda_tests"], "cuda_tests", "python -m pytest -m cuda", self.cuda_tests))
        if {"throughput", "loader", "evaluation", "training"} & steps:
            planned.append(Measurement(label["data"], "data", "data for steps 3-6", self.data))
        if "throughput" in steps:
            # fp16 and compile need a GPU even with --quick (the CPU trains in fp32; compiling takes minutes there)
            for mode, needs_cuda in (("bf16", not quick), ("fp16", True), ("compile", True), ("giant", not quick)):
                planned.append(Measurement(label["throughput"], f"throughput_{mode}", throughput_label(mode, sizes, self.device),
                                           partial(self.child, label["throughput"], "throughput", f"throughput_{mode}", mode=mode),
                                           needs_cuda=needs_cuda, needs_data=True))
        if "loader" in steps:
            planned.append(Measurement(label["loader"], "loader", "training loader", self.loader, needs_data=True))
        if "training" in steps:
            planned.append(Measurement(label["training"], "training", f"{sizes.small_model}, random weights", self.training,
                                       needs_cuda=not quick, needs_data=True))
        if "evaluation" in steps:
            planned.append(Measurement(label["evaluation"], "extraction", f"feature extraction, {sizes.model}",
                                       partial(self.child, label["evaluation"], "extraction"), needs_cuda=not quick, needs_data=True))
            planned.append(Measurement(label["evaluation"], "evaluation", "mAP fp32 vs bf16 (evaluate.py)", self.precision_scores,
                                       needs_data=True))
        if "rerank" in steps:
            planned.append(Measurement(label["rerank"], "rerank", "re-ranking", partial(self.child, label["rerank"], "rerank")))
        return planned

    def run(self) -> None:
        planned = self.plan()
        for index, measurement in enumerate(planned):
            later = [m for m in planned[index + 1:] if self.cuda or not m.needs_cuda]
            self.measure(measurement, reserved=sum(self.sizes.seconds[m.key][0] for m in later))

    def environment(self) -> None:
        figures = self.child(STEP_LABELS["environment"], "environment")
        self.gpu = figures.get("gpu", self.gpu)
        self.add(Row(STEP_LABELS["environment"], "requirements", "ok", requirement_versions(), cpu_name()))

    def cuda_tests(self) -> None:
        step = STEP_LABELS["cuda_tests"]
        pytest = ["-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
        if not self.cuda and self.config.quick:  # counting them means importing every test module: 15 s on 2 cores
            return self.add(Row(step, "python -m pytest -m cuda", "skipped", "skipped: no CUDA"))
        if not self.cuda:
            status, text = self.run_process([sys.executable, *pytest, "--collect-only"], "cuda_tests")
            if status not in (0, 5):  # 5: none collected
                raise StepFailed(cause_of(text, status))
            found = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
            count = found.group(1) if found else "no"
            return self.add(Row(step, "python -m pytest -m cuda", "skipped", f"skipped: no CUDA ({count} CUDA tests found)",
                                figures={"found": int(found.group(1)) if found else 0}))
        report = self.work / "cuda_tests.xml"
        report.unlink(missing_ok=True)
        status, text = self.run_process([sys.executable, *pytest, f"--junitxml={report}"], "cuda_tests")
        if not report.is_file():
            raise StepFailed(cause_of(text, status))
        suites = ElementTree.parse(report).getroot()
        suite = suites if suites.tag == "testsuite" else suites[0]
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        failing = [f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}" for case in suite.iter("testcase")
                   if case.find("failure") is not None or case.find("error") is not None]
        result = (f"{counts['tests']} run: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
                  f"{counts['skipped']} skipped" + (f" (failing: {', '.join(failing[:3])}{', ...' if len(failing) > 3 else ''})" if failing else ""))
        ok = counts["tests"] > 0 and not failing
        self.add(Row(step, "python -m pytest -m cuda", "ok" if ok else "failed", result, figures=counts | {"passed": passed}))

    def data(self) -> None:
        step, data_dir = STEP_LABELS["data"], self.data_dir
        table = data_reid(data_dir) / TRAIN_TABLE
        if self.config.data_dir is not None:
            if not table.is_file():
                raise StepFailed(f"{table} not found: run python preprocess_data.py --data-dir {data_dir} (or leave out "
                                 "--data-dir to draw the synthetic twin)")
            self.data_ready = True
            return self.add(Row(step, "data for steps 3-6", "ok", f"{data_dir} (given): {len(pd.read_csv(table)):,} rows in {TRAIN_TABLE}",
                                cpu_name()))
        reused = data_reid(data_dir).is_dir()
        started = time.monotonic()
        self.command(["download_data.py", "--source", "synthetic", "--scale", self.sizes.twin, "--data-dir", data_dir], "twin")
        drawn_in = time.monotonic() - started
        self.command(["preprocess_data.py", "--data-dir", data_dir], "preprocess")
        images = sum(1 for _ in data_reid(data_dir).rglob(f"*{IMAGE_SUFFIX}"))
        how = "already drawn, reused" if reused else f"drawn in {drawn_in:.0f} s with {os.cpu_count()} processes"
        self.data_ready = True
        self.add(Row(step, "data for steps 3-6", "ok", f"synthetic twin, {self.sizes.twin} scale: {images:,} images ({how})",
                     cpu_name(), figures={"images": images, "draw_seconds": None if reused else drawn_in}))

    def loader(self) -> None:
        step = STEP_LABELS["loader"]
        loading = self.child(step, "loader")
        training = self.figures.get("throughput_bf16", {}).get("images_per_s")
        if training:
            per_worker = loading["images_per_s"] / loading["workers"]
            bound = loading["images_per_s"] < training
            verdict = (f"loader-bound: about {math.ceil(training / per_worker)} workers would keep up" if bound
                       else "not loader-bound")
            self.add(Row(step, "loader vs training", "ok", f"the loader gives {loading['images_per_s']:.0f} images/s, "
                         f"step 3 trains {training:.0f} images/s: {verdict}", " / ".join(dict.fromkeys((cpu_name(), self.machine))),
                         figures={"loader_bound": bound}))

    def training(self) -> None:
        step, sizes = STEP_LABELS["training"], self.sizes
        run_dir = self.work / "runs" / "gpu_check"
        flags = ["--model", sizes.small_model, "--no-pretrained", *sizes.small_flags, "--data-dir", self.data_dir,
                 "--model-path", run_dir.parent, "--run-name", run_dir.name, "--device", self.device.type, "--no-verbose"]
        self.command(["train_our_post.py", *flags, "--epochs", "1", "--overwrite"], "train_epoch1")
        shutil.copy2(run_dir / "last.pth", self.work / "epoch1.pth")
        for epochs in (2, 3):
            self.command(["train_our_post.py", "--resume", run_dir / "last.pth", "--epochs", str(epochs), "--no-verbose"],
                         f"train_epoch{epochs}")
        metrics = pd.read_csv(run_dir / "metrics.csv")
        log = (run_dir / "log.txt").read_text(encoding="utf-8")
        speeds = [float(s) for s in re.findall(r"epoch \d+: loss .*?\(([\d.]+) images/s\)", log)]
        resumed = log.count("resuming run")
        maps = {name: metrics[f"map_{name}"].tolist() for name in ("raw", "classic", "hard")}
        rises = maps["raw"][-1] > maps["raw"][0]
        percent = lambda values: " -> ".join(f"{100 * v:.1f}" for v in values)  # noqa: E731
        self.add(Row(step, f"{sizes.small_model}, random weights", "ok" if rises else "failed",
                     f"mAP % by epoch: raw {percent(maps['raw'])}, classic {percent(maps['classic'])}, hard {percent(maps['hard'])}: "
                     + ("rises" if rises else "does NOT rise"), figures={"map": maps}))
        self.add(Row(step, "epoch and evaluation time", "ok",
                     f"training {' / '.join(f'{s:.1f}' for s in metrics['seconds'])} s per epoch"
                     + (f" ({np.mean(speeds):.0f} images/s)" if speeds else "")
                     + f"; evaluation (raw, classic, hard) {' / '.join(f'{s:.1f}' for s in metrics['eval_seconds'])} s",
                     figures={"train_seconds": metrics["seconds"].tolist(), "eval_seconds": metrics["eval_seconds"].tolist(),
                              "images_per_s": speeds}))
        epochs = metrics["epoch"].tolist()
        ok = epochs == [1, 2, 3] and resumed == 2
        self.add(Row(step, "resume from last.pth", "ok" if ok else "failed",
                     f"epoch 1, then resumed twice from last.pth (to 2 and 3): metrics.csv epochs {epochs}, "
                     f"{resumed} resumptions in log.txt"))

    def precision_scores(self) -> None:
        step, checkpoint = STEP_LABELS["evaluation"], self.work / "epoch1.pth"
        if not checkpoint.is_file():
            return self.add(Row(step, "mAP fp32 vs bf16 (evaluate.py)", "skipped", "skipped: needs step 6's epoch-1 checkpoint"))
        scores = {}
        for precision in ("fp32", "bf16") if self.cuda else ("fp32",):
            output = self.work / f"evaluate_{precision}"
            self.command(["evaluate.py", "--checkpoint", checkpoint, "--data-dir", self.data_dir, "--output-dir", output,
                          "--eval-precision", precision, "--ranklist-queries", "0", "--device", self.device.type,
                          "--no-verbose"], f"evaluate_{precision}")
            scores[precision] = json.loads((output / "scores.json").read_text())["scores"]
        shown = lambda values: " / ".join(f"{100 * values[f'map_{d}']:.2f}" for d in ("raw", "classic", "hard"))  # noqa: E731
        result = f"epoch-1 model, mAP % raw / classic / hard: fp32 {shown(scores['fp32'])}"
        if "bf16" in scores:
            gaps = {d: 100 * (scores["bf16"][f"map_{d}"] - scores["fp32"][f"map_{d}"]) for d in ("raw", "classic", "hard")}
            result += f", bf16 {shown(scores['bf16'])} (bf16 - fp32: {' / '.join(f'{v:+.2f}' for v in gaps.values())})"
        else:
            result += "; bf16: skipped: no CUDA"
        self.add(Row(step, "mAP fp32 vs bf16 (evaluate.py)", "ok", result, figures={"scores": scores}))

    # ---------------------------------------------------------------- report

    @property
    def budget(self) -> float:
        return self.config.budget or self.sizes.budget

    def ordered_rows(self) -> list[Row]:
        order = list(STEP_LABELS.values())
        return sorted(self.rows, key=lambda row: order.index(row.step) if row.step in order else len(order))

    def write_report(self) -> dict[str, Any]:
        counts = {status: sum(row.status == status for row in self.rows) for status in ("ok", "failed", "stopped", "skipped", "missed")}
        report = {"check": "bench/gpu_check.py" + (" --quick" if self.config.quick else ""), "started_at": self.started_at.isoformat(),
                  "seconds": round(time.monotonic() - self.started, 1), "budget_s": self.budget,
                  "machine": {"gpu": self.gpu if self.cuda else None, "cpu": cpu_name(), "platform": platform.platform()},
                  "commit": self.commit, "counts": counts, "rows": [dataclasses.asdict(row) for row in self.ordered_rows()]}
        write_text_atomically(self.config.output_dir / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
        write_text_atomically(self.config.output_dir / "gpu_check.md", self.markdown(report))
        return report

    def markdown(self, report: dict[str, Any]) -> str:
        counts = " · ".join(f"{count} {status}" for status, count in report["counts"].items() if count)
        lines = [f"# GPU check: {self.machine}, {cpu_name()}" if self.cuda else f"# GPU check: {cpu_name()}, no CUDA", "",
                 f"`{report['check']}`, {self.started_at:%Y-%m-%d %H:%M} UTC, {report['seconds']:.0f} s of a "
                 f"{self.budget:.0f} s budget, commit {report['commit']}: {counts}",
                 "",
                 "| step | what | status | result | machine | s |",
                 "| --- | --- | --- | --- | --- | ---: |"]
        cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        for row in self.ordered_rows():
            seconds = f"{row.seconds:.1f}" if row.seconds is not None else ""
            lines.append(f"| {row.step} | {cell(row.what)} | {row.status} | {cell(row.result)} | {cell(row.machine)} | {seconds} |")
        return "\n".join(lines) + "\n"


def requirement_versions() -> str:
    """The versions of the requirements a bare GPU machine lacks (and where they come from when not beside torch),
    and every installed version outside its range in requirements.txt."""
    home = Path(importlib.metadata.distribution("torch").locate_file("")).resolve()
    parts = []
    for name in ("tyro", "open_clip_torch", "timm"):
        distribution = importlib.metadata.distribution(name)
        where = Path(distribution.locate_file("")).resolve()
        parts.append(f"{name} {distribution.version}" + (f" (from {where})" if where != home else ""))
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return "every line of requirements.txt installed; " + ", ".join(parts)
    outside = [f"{r.name} {v} (wants {r.specifier})" for r in map(Requirement, requirement_lines())
               if not r.specifier.contains(v := importlib.metadata.version(r.name), prereleases=True)]
    return (f"every line of requirements.txt installed; {', '.join(parts)}"
            + (f"; outside the ranges of requirements.txt: {', '.join(outside)}" if outside else ""))


def _end_group(process: subprocess.Popen) -> None:
    """End the process and everything it started in its process group (loader and compile workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# ================================================================================================
# The measurements, each in a process of its own (started by Check.child)
# ================================================================================================


class Rows:
    """The rows a measurement process reports, written to its result file as they come (an overrun keeps them)."""

    def __init__(self, path: Path, step: str, machine: str) -> None:
        self.path, self.step, self.machine = path, step, machine
        self.written: dict[str, Any] = {"rows": []}

    def add(self, what: str, result: str, status: str = "ok", machine: str | None = None, **figures: Any) -> None:
        self.written["rows"].append({"step": self.step, "what": what, "status": status, "result": result,
                                     "machine": machine or self.machine, "figures": figures})
        self.flush()

    def fail(self, cause: str) -> None:
        self.written["error"] = cause
        self.flush()

    def flush(self) -> None:
        write_text_atomically(self.path, json.dumps(self.written, default=float))


def child_main(settings_json: str) -> None:
    """The entry of a measurement process: run one task, its rows to the result file; a failure is one line there."""
    settings = json.loads(settings_json)
    setup = Setup(config_from_dict(Configuration, settings["config"]))
    rows = Rows(Path(settings["result"]), settings["step"], device_name(setup.device))
    try:
        TASKS[settings["task"]](setup, rows, **settings["kwargs"])
    except Exception as error:
        traceback.print_exc()
        rows.fail(one_line(error))
        raise SystemExit(1) from None


def task_environment(setup: Setup, rows: Rows) -> None:
    import timm

    if not setup.cuda:
        rows.add("GPU", "skipped: no CUDA", status="skipped", machine=cpu_name())
    else:
        properties = torch.cuda.get_device_properties(0)
        name, memory, bf16 = properties.name, properties.total_memory / 2**30, torch.cuda.is_bf16_supported()
        peak = bf16_peak_tflops(name)
        rows.add("GPU", f"{name}, {memory:.1f} GiB, {properties.multi_processor_count} SMs, compute capability "
                        f"{properties.major}.{properties.minor}, driver {_driver()}; bf16 {'supported' if bf16 else 'NOT supported'}; "
                        f"datasheet dense bf16 peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown for this GPU'}",
                 gpu=name, memory_gib=memory, bf16=bf16, peak_tflops=peak)
        rows.add("bf16 matmul 8192^3", f"{_matmul_tflops():.0f} TFLOP/s measured (mean of 10 after 3 warm-ups)")
    rows.add("attention of the ViTs", _attention_report(setup))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows.add("software", f"Python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                         f"cuDNN {cudnn}, timm {timm.__version__}, numpy {np.__version__}", machine=cpu_name())
    rows.add("CPU", f"{os.cpu_count()} cores, {_memory_gib():.0f} GiB memory, {platform.machine()}, {platform.platform()}",
             machine=cpu_name())


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _driver() -> str:
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20)
        return found.stdout.strip().splitlines()[0] if found.returncode == 0 and found.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _matmul_tflops(side: int = 8192) -> float:
    a, b = (torch.randn(side, side, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * side**3 / (time.perf_counter() - started) / 1e12


def _attention_report(setup: Setup) -> str:
    """Whether the encoder's attention layers call F.scaled_dot_product_attention, and which kernel torch picks for their shape."""
    import timm.layers
    from torch.nn.attention import SDPBackend, sdpa_kernel

    encoder = _outline(setup.sizes.model, setup.sizes.img_size)
    layers = [module for module in encoder.modules() if hasattr(module, "fused_attn") and hasattr(module, "num_heads")]
    fused = sum(bool(layer.fused_attn) for layer in layers)
    backbone = encoder.backbone
    tokens = backbone.patch_embed.num_patches + getattr(backbone, "num_prefix_tokens", 0)
    head_dim = getattr(layers[0], "head_dim", None) if layers else None
    shape = (2, layers[0].num_heads, tokens, head_dim) if head_dim else None
    text = (f"{fused} of {len(layers)} attention layers of {setup.sizes.model} call F.scaled_dot_product_attention "
            f"(timm use_fused_attn() {timm.layers.use_fused_attn()})")
    if shape is None:
        return text
    chosen = []
    for dtype in (torch.bfloat16, torch.float32) if setup.cuda else (torch.float32,):
        q = torch.randn(shape, device=setup.device, dtype=dtype)
        try:
            chosen.append(f"{str(dtype).removeprefix('torch.')} {_kernel(SDPBackend(int(torch._fused_sdp_choice(q, q, q))))}")
        except Exception as error:  # a private torch function: may change
            chosen.append(f"{dtype} -> unknown ({type(error).__name__})")
    text += f"; for their shape {tuple(shape)} torch picks: {', '.join(chosen)}"
    if not setup.cuda:
        return text + "; GPU kernels: skipped: no CUDA"
    available = []
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            available.append(f"{_kernel(backend)} yes")
        except RuntimeError:
            available.append(f"{_kernel(backend)} no")
    return text + f"; bf16 kernels available: {', '.join(available)}"


def _kernel(backend: Any) -> str:
    return {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "memory-efficient", "CUDNN_ATTENTION": "cuDNN",
            "MATH": "math"}.get(backend.name, backend.name.lower())


def _outline(model: str, img_size: int | None) -> Encoder:
    """The encoder without its weights (its sizes and modules only): on the meta device, else (an older timm) on the CPU."""
    spec = {"model": model, "pretrained": False, "img_size": img_size}
    try:
        with torch.device("meta"):
            return build_model(spec)
    except Exception:
        return build_model(spec)


def _training_split(data_dir: Path) -> tuple[pd.DataFrame, np.ndarray, int, pd.DataFrame]:
    """(training rows, their player labels, number of players, held-out rows) as the training script splits them."""
    train_df, held_out = split_train_test(load_train_frame(data_dir), DEFAULTS.fold, DEFAULTS.train_on_all)
    labels, players = player_labels(train_df["player"])
    return train_df, labels, len(players), held_out


def _loader_config(setup: Setup, pairs: int) -> train_our_post.Configuration:
    return dataclasses.replace(DEFAULTS, data_dir=setup.data_dir, batch_size=pairs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on the CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def flops_per_image(encoder: Encoder, device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """Forward + backward FLOPs of one image through ``encoder`` (torch's FLOP counter: matrix products,
    convolutions, attention), without the recomputation of gradient checkpointing (model FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = encoder.backbone
    checkpointing = bool(getattr(backbone, "grad_checkpointing", False))
    if checkpointing:
        backbone.set_grad_checkpointing(False)
    images = torch.randn(2, 3, *encoder.img_size, device=device)
    try:
        with FlopCounterMode(display=False) as counter:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                total = encoder(images).float().sum()
            total.backward()
    finally:
        if checkpointing:
            backbone.set_grad_checkpointing(True)
        encoder.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(images)


def throughput_label(mode: str, sizes: Sizes, device: torch.device) -> str:
    """The row name of a training-speed mode: bf16 (the default), fp16 (published), compile, giant."""
    if mode == "giant":
        return f"{sizes.giant}: bf16, gradient checkpointing, {sizes.giant_pairs} pairs"
    return sizes.model + ": " + {"bf16": describe_precision(device, DEFAULTS.mixed_precision),
                                 "fp16": "fp16 autocast + gradient scaler (published)",
                                 "compile": "bf16 + torch.compile"}[mode]


def task_throughput(setup: Setup, rows: Rows, mode: str) -> None:
    sizes, device = setup.sizes, setup.device
    giant = mode == "giant"
    name, pairs = (sizes.giant, sizes.giant_pairs) if giant else (sizes.model, sizes.pairs)
    precision = "fp16" if mode == "fp16" else DEFAULTS.mixed_precision
    what = throughput_label(mode, sizes, device)
    if device.type == "cuda":
        set_gpu_kernels(DEFAULTS.fast_kernels)
    amp_dtype = autocast_dtype(device, precision)
    with device:  # random initialisation where the model runs: no copy of a billion weights from the CPU
        encoder = build_model({"model": name, "pretrained": False, "img_size": sizes.img_size, "grad_checkpointing": giant})
    flops = flops_per_image(encoder, device, amp_dtype)
    train_df, labels, players, _ = _training_split(setup.data_dir)
    criterion = ReidLoss(DEFAULTS.loss, encoder.embed_dim, num_classes=players, label_smoothing=DEFAULTS.label_smoothing)
    model = PairModel(encoder, criterion, loss_under_autocast=precision == "fp16").to(device)
    if mode == "compile":
        model.encoder = torch.compile(encoder)
    # a few real batches of the twin, kept on the device: the step is timed, not the loader (step 4)
    sampler, loader = training_batches(_loader_config(setup, pairs), train_df, labels, encoder, device)
    sampler.set_epoch(1)
    batches = []
    for batch in loader:
        batches.append(tuple(tensor.to(device) for tensor in batch))
        if len(batches) == 8:
            break
    del loader
    optimizer = torch.optim.AdamW(model.parameters(), lr=DEFAULTS.lr, weight_decay=DEFAULTS.weight_decay)
    scheduler = build_scheduler(optimizer, "constant", warmup_steps=0, total_steps=1)
    scaler = make_grad_scaler(amp_dtype)

    def seconds_of(count: int) -> float:
        _synchronize(device)
        started = time.perf_counter()
        train_one_epoch(model, [batches[i % len(batches)] for i in range(count)], optimizer, scheduler, device, epoch=1,
                        scaler=scaler, amp_dtype=amp_dtype, verbose=False)
        _synchronize(device)
        return time.perf_counter() - started

    compile_note = ""
    if mode == "compile":
        def give_up() -> None:
            rows.add(what, f"did not compile within {COMPILE_LIMIT_S} s", status="stopped")
            os._exit(0)

        watchdog = threading.Timer(COMPILE_LIMIT_S, give_up)
        watchdog.daemon = True
        watchdog.start()
        compile_note = f"; compiled in {seconds_of(1):.0f} s"
        watchdog.cancel()
    steps = sizes.giant_steps if giant else sizes.steps
    try:
        seconds_of(sizes.warmup)  # kernels, autotuning, the allocator
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = seconds_of(steps)
    except torch.cuda.OutOfMemoryError as error:
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        return rows.add(what, f"does not fit in {memory:.0f} GiB at {pairs} pairs ({one_line(error)})", status="failed")
    pairs_per_s = pairs * steps / seconds
    images_per_s = 2 * pairs_per_s
    achieved = images_per_s * flops / 1e12
    peak = bf16_peak_tflops(device_name(device)) if device.type == "cuda" else None
    memory = _peak_memory_gib(device)
    utilisation = f"MFU {achieved / peak:.0%} of {peak:.0f}" if peak else "MFU: no known peak for this device"
    rows.add(what, f"{images_per_s:.0f} images/s, {pairs_per_s:.1f} pairs/s ({1000 * seconds / steps:.0f} ms per step of "
                   f"{pairs} pairs); {utilisation} ({achieved:.3g} TFLOP/s, {flops / 1e9:.3g} GFLOP per image forward + "
                   f"backward); peak {'GPU' if device.type == 'cuda' else 'process'} memory {memory:.1f} GiB{compile_note}",
             pairs_per_s=pairs_per_s, images_per_s=images_per_s, peak_memory_gib=memory, flops_per_image=flops,
             achieved_tflops=achieved, mfu=achieved / peak if peak else None)


def task_loader(setup: Setup, rows: Rows) -> None:
    sizes = setup.sizes
    encoder = _outline(sizes.model, sizes.img_size)  # only its input size and normalisation are used
    train_df, labels, _, _ = _training_split(setup.data_dir)
    config = _loader_config(setup, sizes.pairs)
    sampler, loader = training_batches(config, train_df, labels, encoder, setup.device)
    sampler.set_epoch(1)
    started = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - started
    started, count = time.perf_counter(), 0
    for _ in batches:
        count += 1
        if count == sizes.loader_batches:
            break
    seconds = time.perf_counter() - started
    images_per_s = 2 * sizes.pairs * count / seconds
    workers = max(1, config.num_workers)
    rows.add("training loader", f"{images_per_s:.0f} images/s with {config.num_workers} workers ({images_per_s / workers:.0f} "
             f"per worker) at {'x'.join(map(str, encoder.img_size))}, {count} batches of {sizes.pairs} pairs after the first "
             f"({first:.1f} s): decode, letterbox, sharpen, normalise, erase", machine=cpu_name(),
             images_per_s=images_per_s, workers=workers, first_batch_s=first)


def task_extraction(setup: Setup, rows: Rows) -> None:
    sizes, device = setup.sizes, setup.device
    with device:
        encoder = build_model({"model": sizes.model, "pretrained": False, "img_size": sizes.img_size})
    _, _, _, held_out = _training_split(setup.data_dir)
    frame = pd.concat(query_gallery(held_out), ignore_index=True)
    for precision in ("fp32", "bf16") if setup.cuda else ("fp32",):
        extract = partial(features_for_frame, encoder, data_dir=setup.data_dir, device=device, batch_size=DEFAULTS.batch_size_eval,
                          num_workers=DEFAULTS.num_workers, amp_dtype=autocast_dtype(device, precision))
        extract(frame.iloc[:DEFAULTS.batch_size_eval])  # warm-up: kernels, the allocator
        _synchronize(device)
        started = time.perf_counter()
        extract(frame)
        _synchronize(device)
        images_per_s = len(frame) / (time.perf_counter() - started)
        rows.add(f"feature extraction {precision}", f"{images_per_s:.0f} images/s ({len(frame)} held-out images, random "
                 f"weights, batch {DEFAULTS.batch_size_eval}, {DEFAULTS.num_workers} loader workers)", images_per_s=images_per_s)
    if not setup.cuda:
        rows.add("feature extraction bf16", "skipped: no CUDA", status="skipped")


def task_rerank(setup: Setup, rows: Rows) -> None:
    """Both re-rankings (the evaluation's settings) of clustered features at each size: seconds, peak GPU memory;
    at the first size also on the CPU, and the largest difference. Sizes after the first need a GPU."""
    device = setup.device
    settings = DEFAULTS.rerank_settings
    for index, size in enumerate(setup.sizes.rerank_sizes):
        num_query, num_gallery, dim, identities, noise = FEATURE_SIZES[size]
        label, compare = f"{size} {num_query:,} x {num_gallery:,}, {dim}-d", index == 0
        if not compare and device.type != "cuda":
            rows.add(label, "skipped: no CUDA", status="skipped")
            continue
        query, gallery, _, _ = clustered_features(num_query, num_gallery, dim, identities, noise, seed=0)
        if device.type == "cuda":
            rerank(query[:20], gallery[:200], "classic", settings, device=device)  # warm-up: kernels, cuBLAS
        for method in ("classic", "hard_weight"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            output = rerank(query, gallery, method, settings, device=device)
            seconds = time.perf_counter() - started
            target = TARGETS_S.get(size) if device.type == "cuda" else None
            status = "missed" if target and seconds > target else "ok"
            text = f"{seconds:.2f} s on the {'GPU' if device.type == 'cuda' else 'CPU'}"
            text += f" (target <= {target:.0f} s: {'met' if status == 'ok' else 'MISSED'})" if target else ""
            figures = {"seconds": seconds}
            if device.type == "cuda":
                figures["peak_gpu_memory_gib"] = _peak_memory_gib(device)
                text += f", peak GPU memory {figures['peak_gpu_memory_gib']:.2f} GiB"
            if compare and device.type == "cuda":
                started = time.perf_counter()
                reference = rerank(query, gallery, method, settings, device="cpu")
                figures |= {"cpu_seconds": time.perf_counter() - started, "max_difference": float(np.abs(output - reference).max())}
                equal = figures["max_difference"] <= RERANK_TOLERANCE
                status = status if equal else "failed"
                text += (f"; CPU {figures['cpu_seconds']:.2f} s, max |GPU - CPU| {figures['max_difference']:.1e}: "
                         f"{'equal' if equal else 'DIFFERENT'} within {RERANK_TOLERANCE:g}")
            elif compare:
                text += "; GPU vs CPU: skipped: no CUDA"
            rows.add(f"{label}: {method}", text, status=status, **figures)
            del output


TASKS: dict[str, Callable[..., None]] = {"environment": task_environment, "throughput": task_throughput, "loader": task_loader,
                                         "extraction": task_extraction, "rerank": task_rerank}


def main(config: Configuration) -> None:
    check = Check(config)
    try:
        check.run()
    except KeyboardInterrupt:  # run_script prints "interrupted: <this>" and exits with 130
        raise Interrupted(f"{config.output_dir / 'gpu_check.md'} holds what was measured") from None
    finally:
        report = check.write_report()
        check.log.close()
    print()
    print(check.markdown(report), end="")
    print(f"report: {config.output_dir / 'gpu_check.md'}, {config.output_dir / 'gpu_check.json'}; "
          f"outputs of every command: {config.output_dir / 'gpu_check.log'}")
    if any(row.status in ("failed", "stopped") for row in check.rows):
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main, Configuration)
