"""Post-processing at scale: time and peak memory of each step on synthetic clustered features.

    python bench/bench_scale.py --quick                        # a small case, seconds
    python bench/bench_scale.py --sizes challenge              # 618 x 9,505 (N = 10,123), dim 768
    python bench/bench_scale.py --sizes msmt17 --topk 100      # 11,659 x 82,161 (N = 93,820), dim 768: minutes

Steps: the blockwise neighbour search alone (k1 + 1 = 21 nearest of every image among all N), both
re-rankings from features (``reid.rerank.classic_from_features`` / ``hard_weight_from_features``),
and the metrics computed blockwise (mAP, mINP, CMC x 3). Up to the challenge size the dense path is
run too (its time, and the largest difference between the two). Peak RSS is the process's
high-water mark during the step (reset before each step through /proc/self/clear_refs); "above start"
subtracts what the process held when the step began (features, earlier results).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reid.config import parse  # noqa: E402
from reid.neighbors import knn  # noqa: E402
from reid.rerank_sparse import classic_from_features, hard_weight_from_features  # noqa: E402
from reid.synthetic_features import clustered_features  # noqa: E402

T = TypeVar("T")
Size = Literal["quick", "challenge", "msmt17"]
SIZES: dict[str, tuple[int, int, int, int]] = {  # queries, gallery, dim, identities
    "quick": (200, 3_000, 128, 100),
    "challenge": (618, 9_505, 768, 618),
    "msmt17": (11_659, 82_161, 768, 3_060),
}


@dataclass
class Configuration:
    """Benchmark the sparse re-rankings and blockwise metrics at challenge and MSMT17 size."""

    sizes: tuple[Size, ...] = ("challenge", "msmt17")
    """Cases to run: quick (200 x 3,000, dim 128), challenge (618 x 9,505), msmt17 (11,659 x 82,161)."""
    quick: bool = False
    """Run only the quick case (overrides --sizes)."""
    topk: int | None = None
    """Re-ranking output: None = the full (num_query, num_gallery) matrix; K = each query's K best."""
    device: str = "cpu"
    """Where the distance blocks and Jaccard joins run: cpu or cuda."""
    compare_dense: bool = True
    """Also run the dense path (sizes up to challenge only) and report max |sparse - dense|."""
    threads: int | None = None
    """torch CPU threads; None keeps torch's default."""
    seed: int = 0
    """Seed of the synthetic features."""


def main(config: Configuration) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    sizes = ("quick",) if config.quick else config.sizes
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {config.device}, load average {_load()}")
    print(f"{'case':<10} {'step':<28} {'seconds':>9} {'peak RSS GB':>12} {'above start GB':>15}")
    for size in sizes:
        run_case(size, config)
    print(f"load average at the end: {_load()} (other processes on the same cores make the timings noisy)")


def run_case(size: str, config: Configuration) -> None:
    """Every step on one synthetic case, one table row per step."""
    num_query, num_gallery, dim, num_ids = SIZES[size]
    query, gallery, query_ids, gallery_ids = clustered_features(num_query, num_gallery, dim, num_ids=num_ids, seed=config.seed)
    both = np.concatenate([query, gallery])
    label = f"{size}"
    report = lambda step, fn: _measure(label, step, fn)  # noqa: E731
    compare = config.compare_dense and size != "msmt17" and config.topk is None
    report("neighbours (k=21, all N)", lambda: knn(both, both, 21, device=config.device))
    del both
    classic = report("classic (lambda 0.3)", lambda: classic_from_features(query, gallery, lambda_value=0.3, topk=config.topk, device=config.device))
    if not compare:
        del classic  # each variant's peak without the previous output
    hard = report("hard-weight (lambda 0.7)", lambda: hard_weight_from_features(query, gallery, lambda_value=0.7, topk=config.topk, device=config.device))
    if compare:
        _compare_dense(label, query, gallery, classic, hard)


def _compare_dense(label: str, query: np.ndarray, gallery: np.ndarray, classic: np.ndarray, hard: np.ndarray) -> None:
    """Run the dense definitions (``reid.rerank``) and print the largest difference to the sparse path."""
    from reid import rerank
    from reid.distance import squared_euclidean

    dist_qg, dist_qq, dist_gg = squared_euclidean(query, gallery), squared_euclidean(query, query), squared_euclidean(gallery, gallery)
    dense_classic = _measure(label, "dense classic (baseline)", lambda: rerank.classic(dist_qg, dist_qq, dist_gg, lambda_value=0.3))
    dense_hard = _measure(label, "dense hard-weight (baseline)", lambda: rerank.hard_weight(query, gallery, lambda_value=0.7))
    print(f"{label:<10} max |sparse - dense|: classic {np.abs(classic - dense_classic).max():.2e}, hard-weight {np.abs(hard - dense_hard).max():.2e}")


def _measure(label: str, step: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` once; print its wall time and peak resident memory."""
    _reset_peak()
    start_rss = _status_gb("VmRSS")
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _status_gb("VmHWM")
    print(f"{label:<10} {step:<28} {seconds:9.2f} {peak:12.2f} {peak - start_rss:15.2f}", flush=True)
    return out


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the RSS high-water mark
    except OSError:
        pass


def _status_gb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main(parse(Configuration))
