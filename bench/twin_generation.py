"""Time the synthetic twin: planning, drawing one crop, and writing a whole twin.

    python bench/twin_generation.py                       # small twin, one process per core
    python bench/twin_generation.py --scale full --workers 2

Prints wall-clock seconds and images per second; the twin is written to a temporary folder and deleted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import parse  # noqa: E402
from reid.synthetic.twin import generate_twin, plan_twin, render_sequence  # noqa: E402


@dataclass
class Configuration:
    """Benchmark the synthetic twin generator."""

    scale: Literal["small", "full"] = "small"
    """Twin size to write."""
    workers: int | None = None
    """Drawing processes; None: one per CPU core."""
    seed: int = 0
    """Twin seed."""


def main(config: Configuration) -> None:
    start = time.perf_counter()
    plan = plan_twin(config.scale, config.seed)
    plan_s = time.perf_counter() - start

    start = time.perf_counter()
    drawn = sum(1 for _ in render_sequence(config.seed, plan.sequences[0]))
    per_image_ms = (time.perf_counter() - start) / drawn * 1000

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_twin(tmp, config.scale, config.seed, workers=config.workers, progress=False)
        total_s = time.perf_counter() - start

    n = len(plan.images)
    print(f"scale {config.scale}: {n:,} images, {len(plan.sequences)} sequences")
    print(f"plan                 {plan_s * 1000:8.1f} ms")
    print(f"one crop (1 process) {per_image_ms:8.2f} ms (mean over {drawn} crops, JPEG encoding included)")
    print(f"whole twin           {total_s:8.1f} s   ({n / total_s:,.0f} images/s, workers={config.workers or 'all cores'})")


if __name__ == "__main__":
    main(parse(Configuration))
