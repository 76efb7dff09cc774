"""Post-processing at the 2023 challenge size: wall time and peak memory of each step, checked for equality.

    python bench/bench_postprocess.py                       # 618 queries x 9,505 gallery, all steps
    python bench/bench_postprocess.py --threads 1           # torch on one thread (a busy shared machine)
    python bench/bench_postprocess.py --queries 100 --gallery 1500 --steps classic metrics
    python bench/bench_postprocess.py --steps classic classic_features hard_weight --check-queries 0   # re-ranking only

Synthetic clustered features: one query per player and about gallery / queries gallery images per
player (15-16 at the challenge size), each image = player centre + Gaussian noise, L2-normalised.
Each step runs in a fresh process (``multiprocessing`` spawn) that first loads its inputs; the table
shows its wall time and its peak RSS above that baseline (Linux: the peak is reset with
``/proc/self/clear_refs`` and read from ``VmHWM``; elsewhere ``ru_maxrss``). Before timing, the fast
functions are compared with the plain implementations of ``tests/plain_postprocess.py`` (written
line by line from the reference README) on a subset, and the fused CSVs with the in-memory fusion.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reid.config import parse  # noqa: E402

STEPS = ("classic", "classic_features", "hard_weight", "metrics", "evaluate", "write_csv", "read_csv", "dissim_fuse", "sim_fuse")
# Published implementation on this machine (2 CPU threads), as measured for issue 4, in seconds.
PUBLISHED = {"classic": 17.0, "hard_weight": 274.0, "metrics": 42.0, "dissim_fuse": 33.0}
TARGETS = {"classic": 1.7, "hard_weight": 5.0, "metrics": 2.0, "dissim_fuse": 3.3}
WHAT = {
    "classic": "rerank.classic(qg, qq, gg), k1 20, k2 6, lambda 0.3",
    "classic_features": "rerank.classic_from_features(q, g), the same from features",
    "hard_weight": "rerank.hard_weight(q, g), k1 20, k2 6, lambda 0.7",
    "metrics": "mean_ap + cmc x 3 configs (separate calls, as published)",
    "evaluate": "metrics.evaluate: mAP, mINP, 3 CMC with one sort",
    "write_csv": "DistanceMatrix.write_csv of one matrix",
    "read_csv": "DistanceMatrix.read_csv of one matrix",
    "dissim_fuse": "read 3 CSVs + dissimilarity_fusion + write",
    "sim_fuse": "read 3 CSVs + similarity_fusion + write",
}


@dataclass
class Configuration:
    queries: int = 618
    """Number of queries (one per player)."""
    gallery: int = 9505
    """Number of gallery images."""
    dim: int = 128
    """Feature dimension."""
    sigma: float = 0.12
    """Noise per coordinate around each player's centre (0.12 at dim 128 gives a raw mAP near 0.85)."""
    seed: int = 0
    """Seed of the synthetic features."""
    threads: int | None = None
    """torch threads in each step's process; None = torch's default."""
    steps: tuple[str, ...] = STEPS
    """Steps to time, among: classic classic_features hard_weight metrics evaluate write_csv read_csv dissim_fuse sim_fuse."""
    check_queries: int = 60
    """Queries of the subset on which the fast functions are compared with the plain ones (0 = skip)."""
    check_gallery: int = 900
    """Gallery images of that subset."""


def main(config: Configuration) -> None:
    unknown = set(config.steps) - set(STEPS)
    if unknown:
        raise SystemExit(f"error: unknown steps {sorted(unknown)}; choose among {' '.join(STEPS)}")
    with tempfile.TemporaryDirectory(prefix="bench_postprocess_") as folder:
        folder = Path(folder)
        print(f"building inputs: {config.queries} queries x {config.gallery} gallery, dim {config.dim}, sigma {config.sigma}")
        _write_inputs(config, folder)
        if config.check_queries > 0:
            _check_equal(config, folder)
        context = multiprocessing.get_context("spawn")
        rows = []
        for step in config.steps:
            with context.Pool(1) as pool:
                seconds, extra_mb = pool.apply(_measure, (step, str(folder), config.threads))
            rows.append((step, seconds, extra_mb))
            print(f"  {step:<16} {seconds:8.2f} s  {extra_mb:8.0f} MB")
    _print_table(config, rows)


def _features(config: Configuration):
    from reid.synthetic.features import clustered_features

    # one query per player; sigma per coordinate = noise / sqrt(dim)
    return clustered_features(config.queries, config.gallery, config.dim, noise=config.sigma * np.sqrt(config.dim),
                              seed=config.seed)


def _write_inputs(config: Configuration, folder: Path) -> None:
    from reid.matrices import DistanceMatrix
    from reid.retrieval.distance import squared_euclidean

    q, g, query_ids, gallery_ids = _features(config)
    np.save(folder / "q.npy", q)
    np.save(folder / "g.npy", g)
    np.save(folder / "query_ids.npy", query_ids)
    np.save(folder / "gallery_ids.npy", gallery_ids)
    np.save(folder / "qg.npy", squared_euclidean(q, g))
    np.save(folder / "qq.npy", squared_euclidean(q, q))
    np.save(folder / "gg.npy", squared_euclidean(g, g))
    rng = np.random.default_rng(config.seed + 1)
    for k in range(3):  # three "models": the same players with their own noise
        noisy = g + (0.03 * (k + 1)) * rng.normal(size=g.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        DistanceMatrix(squared_euclidean(q, noisy), query_ids, gallery_ids).write_csv(folder / f"model{k}.csv")


def _check_equal(config: Configuration, folder: Path) -> None:
    """Fast vs plain on a subset (plain dense code is too slow at full size); fused files vs memory."""
    from reid.matrices import DistanceMatrix, check_aligned
    from reid.retrieval import metrics, rerank
    from reid.retrieval.fusion import dissimilarity_fusion
    from tests.plain_postprocess import plain_classic, plain_hard_weight, plain_scores

    q, g = np.load(folder / "q.npy"), np.load(folder / "g.npy")
    query_ids, gallery_ids = np.load(folder / "query_ids.npy"), np.load(folder / "gallery_ids.npy")
    players = np.arange(min(config.check_queries, config.queries))
    keep = np.flatnonzero(np.isin(gallery_ids, players))[:config.check_gallery]
    q, g, query_ids, gallery_ids = q[players], g[keep], query_ids[players], gallery_ids[keep]
    from reid.retrieval.distance import squared_euclidean

    qg, qq, gg = squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g)
    start = time.perf_counter()
    expected_classic = plain_classic(qg, qq, gg)
    classic_gap = max(np.abs(rerank.classic(qg, qq, gg) - expected_classic).max(),
                      np.abs(rerank.classic_from_features(q, g) - expected_classic).max())
    hard_gap = np.nanmax(np.abs(rerank.hard_weight(q, g) - plain_hard_weight(q, g)))
    cams = (np.zeros(len(q), np.int64), np.ones(len(g), np.int64))
    np.random.seed(0)
    plain_ap, plain_inp, plain_cmc = plain_scores(qg, query_ids, gallery_ids, *cams, topk=100)
    scores = metrics.evaluate(qg, query_ids, gallery_ids, rng=np.random.RandomState(0))
    metric_gap = max(abs(scores.mAP - plain_ap), abs(scores.mINP - plain_inp),
                     *(np.abs(scores.cmc[name] - plain_cmc[name]).max() for name in metrics.CMC_CONFIGS))
    models = [DistanceMatrix.read_csv(folder / f"model{k}.csv") for k in range(3)]
    fused = dissimilarity_fusion(check_aligned(models))
    fused_path = models[0].with_values(fused).write_csv(folder / "check_fused.csv")
    fusion_gap = np.abs(DistanceMatrix.read_csv(fused_path).values - fused).max()
    print(f"equality on a {len(q)} x {len(g)} subset (fast vs plain, {time.perf_counter() - start:.0f} s): "
          f"classic {classic_gap:.1e}, hard_weight {hard_gap:.1e}, mAP/mINP/CMC {metric_gap:.1e}; "
          f"dissim fusion file vs memory (full size) {fusion_gap:.1e}")
    if max(classic_gap, hard_gap) > 1e-5 or metric_gap > 1e-9 or fusion_gap > 0:
        raise SystemExit("error: the fast functions differ from the plain ones beyond the reference tolerances")


def _measure(step: str, folder: str, threads: int | None) -> tuple[float, float]:
    """Run one step in this (fresh) process: (wall seconds, peak RSS in MB above the loaded inputs)."""
    import torch

    from reid.matrices import DistanceMatrix, check_aligned
    from reid.retrieval import metrics, rerank
    from reid.retrieval.fusion import dissimilarity_fusion, similarity_fusion

    if threads is not None:
        torch.set_num_threads(threads)
    folder = Path(folder)
    load = lambda name: np.load(folder / f"{name}.npy")  # noqa: E731
    query_ids, gallery_ids = load("query_ids"), load("gallery_ids")
    models = [folder / f"model{k}.csv" for k in range(3)]
    inputs = {
        "classic": lambda: (load("qg"), load("qq"), load("gg")),
        "classic_features": lambda: (load("q"), load("g")),
        "hard_weight": lambda: (load("q"), load("g")),
        "metrics": lambda: (load("qg"),),
        "evaluate": lambda: (load("qg"),),
        "write_csv": lambda: (DistanceMatrix(load("qg"), query_ids, gallery_ids),),
        "read_csv": lambda: (),
        "dissim_fuse": lambda: (),
        "sim_fuse": lambda: (),
    }[step]()

    def run_metrics(qg):
        metrics.mean_ap(qg, query_ids, gallery_ids)
        for name in metrics.CMC_CONFIGS:
            metrics.cmc(qg, query_ids, gallery_ids, config=name)

    def fuse(function):  # what my_py/sim_fuse.py and dissim_fuse.py do
        matrices = [DistanceMatrix.read_csv(path) for path in models]
        matrices[0].with_values(function(check_aligned(matrices))).write_csv(folder / f"{step}.csv")

    action = {
        "classic": lambda: rerank.classic(*inputs),
        "classic_features": lambda: rerank.classic_from_features(*inputs),
        "hard_weight": lambda: rerank.hard_weight(*inputs),
        "metrics": lambda: run_metrics(*inputs),
        "evaluate": lambda: metrics.evaluate(inputs[0], query_ids, gallery_ids),
        "write_csv": lambda: inputs[0].write_csv(folder / "written.csv"),
        "read_csv": lambda: DistanceMatrix.read_csv(models[0]),
        "dissim_fuse": lambda: fuse(dissimilarity_fusion),
        "sim_fuse": lambda: fuse(similarity_fusion),
    }[step]
    baseline = _reset_peak_rss_kb()
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    return seconds, max(_peak_rss_kb() - baseline, 0) / 1024


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss_kb() -> int:
    """Reset the peak RSS to the current RSS (Linux: clear_refs 5) and return it in kB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:  # no reset available: peak since the process started
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _print_table(config: Configuration, rows) -> None:
    import torch

    threads = config.threads or torch.get_num_threads()
    print(f"\nchallenge-size post-processing ({config.queries} x {config.gallery}), torch threads {threads}; "
          "wall time per step in a fresh process, peak RSS above its loaded inputs")
    print("| step | what | time (s) | peak above inputs (MB) | published (s) | speed-up | target (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for step, seconds, extra_mb in rows:
        published = PUBLISHED.get(step)
        speedup = f"{published / seconds:.0f}x" if published else ""
        print(f"| {step} | {WHAT[step]} | {seconds:.2f} | {extra_mb:.0f} | {published or ''} | {speedup} | {TARGETS.get(step, '')} |")


if __name__ == "__main__":
    main(parse(Configuration))
