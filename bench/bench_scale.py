"""Post-processing at scale: time and peak memory of each step on synthetic clustered features.

    python bench/bench_scale.py --quick                        # a small case, seconds
    python bench/bench_scale.py --sizes challenge              # 618 x 9,505 (N = 10,123), dim 768
    python bench/bench_scale.py --sizes msmt17 --topk 100      # 11,659 x 82,161 (N = 93,820), dim 768: minutes
    python bench/bench_scale.py --sizes challenge msmt17 --topk 100 --steps classic hard_weight   # re-ranking only

Steps: the blockwise neighbour search alone (``neighbours``: k1 + 1 = 21 nearest of every image
among all N), the metrics of the raw distance computed blockwise from features (``metrics``: mAP,
mINP, CMC x 3, ``reid.retrieval.blockwise_metrics.evaluate_features``), both re-rankings from features
(``classic``, ``hard_weight``: ``reid.retrieval.rerank.classic_from_features`` /
``hard_weight_from_features``) and the metrics of the classic output (full matrix:
``reid.retrieval.metrics.evaluate``; top-K form: ``evaluate_topk``). Up to the challenge size, classic is also
run on the three distance matrices (the published signature ``classic(dist_qg, dist_qq, dist_gg)``,
the same engine reading given matrices; its time and the largest difference between the two), and the
metrics on the dense matrix. Peak RSS is the process's high-water mark during the step (reset before
each step through /proc/self/clear_refs); "above start" subtracts what the process held when the step
began (features, earlier results).
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
from reid.retrieval.blockwise_metrics import evaluate_features, evaluate_topk  # noqa: E402
from reid.retrieval.distance import squared_euclidean  # noqa: E402
from reid.retrieval.metrics import evaluate  # noqa: E402
from reid.retrieval.neighbors import knn  # noqa: E402
from reid.retrieval.rerank import classic, classic_from_features, hard_weight_from_features  # noqa: E402
from reid.synthetic.features import clustered_features  # noqa: E402

T = TypeVar("T")
Size = Literal["quick", "challenge", "msmt17"]
Step = Literal["neighbours", "metrics", "classic", "hard_weight"]
SIZES: dict[str, tuple[int, int, int, int, float]] = {  # queries, gallery, dim, identities, noise (raw mAP ~0.6)
    "quick": (200, 3_000, 128, 100, 1.8),
    "challenge": (618, 9_505, 768, 618, 2.7),
    "msmt17": (11_659, 82_161, 768, 3_060, 2.7),
}


@dataclass
class Configuration:
    """Benchmark the re-rankings from features and the blockwise metrics at challenge and MSMT17 size."""

    sizes: tuple[Size, ...] = ("challenge", "msmt17")
    """Cases to run: quick (200 x 3,000, dim 128), challenge (618 x 9,505), msmt17 (11,659 x 82,161)."""
    quick: bool = False
    """Run only the quick case (overrides --sizes)."""
    steps: tuple[Step, ...] = ("neighbours", "metrics", "classic", "hard_weight")
    """Steps to run (the metrics of the classic output come with classic)."""
    topk: int | None = None
    """Re-ranking output: None = the full (num_query, num_gallery) matrix; K = each query's K best."""
    device: str = "cpu"
    """Where the distance blocks and Jaccard joins run: cpu or cuda."""
    compare_dense: bool = True
    """Up to the challenge size, also run classic on the three distance matrices and the metrics on the dense
    matrix, and report the largest differences to the from-features results."""
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
    num_query, num_gallery, dim, num_ids, noise = SIZES[size]
    query, gallery, query_ids, gallery_ids = clustered_features(num_query, num_gallery, dim, num_ids, noise, config.seed)
    compare = config.compare_dense and size != "msmt17" and config.topk is None
    step = lambda name, fn: _measure(size, name, fn)  # noqa: E731
    if "neighbours" in config.steps:
        step("neighbours (k=21, all N)", lambda: knn(np.concatenate([query, gallery]), 21, device=config.device))
    if "metrics" in config.steps:
        raw_scores = step("metrics raw (from features)", lambda: evaluate_features(
            query, gallery, query_ids, gallery_ids, rng=np.random.RandomState(0), device=config.device))
        print(f"{size:<10} mAP raw {raw_scores.mAP:.4f}")
        if compare:
            _compare_dense_metrics(size, query, gallery, query_ids, gallery_ids, raw_scores)
    if "classic" in config.steps:
        reranked = step("classic (lambda 0.3)", lambda: classic_from_features(query, gallery, lambda_value=0.3, topk=config.topk,
                                                                               device=config.device))
        if config.topk is None:
            scores = step("metrics classic (matrix)", lambda: evaluate(reranked, query_ids, gallery_ids, rng=np.random.RandomState(0)))
        else:
            scores = step("metrics classic (top-K)", lambda: evaluate_topk(*reranked, query_ids, gallery_ids))
        lists = "" if config.topk is None else (f" (top-{config.topk} lists: {scores.complete_queries} of "
                                                 f"{scores.evaluated_queries} queries hold all their matches)")
        print(f"{size:<10} mAP classic {scores.mAP:.4f}{lists}")
        if compare:
            _compare_matrices(size, query, gallery, reranked)
        del reranked  # the next variant's peak without this output
    if "hard_weight" in config.steps:
        step("hard-weight (lambda 0.7)", lambda: hard_weight_from_features(query, gallery, lambda_value=0.7, topk=config.topk, device=config.device))


def _compare_dense_metrics(label: str, query: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
                           raw_scores) -> None:
    """The metrics on the dense raw matrix (``reid.retrieval.metrics.evaluate``): time, and the largest difference to the blockwise ones."""
    dist_qg = squared_euclidean(query, gallery)
    dense_scores = _measure(label, "dense metrics raw (baseline)", lambda: evaluate(dist_qg, query_ids, gallery_ids, rng=np.random.RandomState(0)))
    metric_gap = max([abs(raw_scores.mAP - dense_scores.mAP), abs(raw_scores.mINP - dense_scores.mINP)]
                     + [float(np.abs(raw_scores.cmc[k] - dense_scores.cmc[k]).max()) for k in dense_scores.cmc])
    print(f"{label:<10} max |blockwise - dense| metrics {metric_gap:.2e}")


def _compare_matrices(label: str, query: np.ndarray, gallery: np.ndarray, reranked: np.ndarray) -> None:
    """Classic on the three given distance matrices (the published signature): time, and the largest difference."""
    dist_qg, dist_qq, dist_gg = squared_euclidean(query, gallery), squared_euclidean(query, query), squared_euclidean(gallery, gallery)
    from_matrices = _measure(label, "classic from matrices", lambda: classic(dist_qg, dist_qq, dist_gg, lambda_value=0.3))
    print(f"{label:<10} max |features - matrices| classic {np.abs(reranked - from_matrices).max():.2e}")


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
