"""Retrieval maths, pure (arrays in, arrays out; no I/O, no printing): distances, neighbours, re-ranking, metrics, fusion.

| module | job |
| --- | --- |
| ``arrays`` | the numpy / torch alias and conversions the other modules share |
| ``distance`` | squared Euclidean (as published) and cosine distances between feature sets, CPU or GPU |
| ``neighbors`` | blockwise distances and nearest-neighbour lists (never an N x N matrix), reciprocal sets |
| ``sources`` | where the re-rankings' distances come from: features blockwise, or three given matrices |
| ``sparse_rows`` | sparse rows: means, the in-place sequential means, sums of element-wise minima |
| ``classic``, ``hard_weight`` | one engine per re-ranking variant, reading any source |
| ``rerank`` | the front ends: ``classic``, ``hard_weight``, ``*_from_features``, ``*_blocks``, ``rerank`` |
| ``metrics`` | mAP, mINP, CMC (allshots / cuhk03 / market1501) of a distance matrix, one sort per query block |
| ``blockwise_metrics`` | the same metrics from row blocks, features or top-K lists (any scale) |
| ``fusion`` | similarity and dissimilarity fusion of aligned matrices |
"""
