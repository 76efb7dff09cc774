"""Retrieval maths, pure (arrays in, arrays out; no I/O): neighbours and re-ranking.

| module | job |
| --- | --- |
| ``neighbors`` | blockwise distances and nearest-neighbour lists (never an N x N matrix), reciprocal sets |
| ``sources`` | where the re-rankings' distances come from: features blockwise, or three given matrices |
| ``sparse_rows`` | sparse rows: means, the in-place sequential means, sums of element-wise minima |
| ``classic``, ``hard_weight`` | one engine per re-ranking variant, reading any source |
| ``rerank`` | the front ends: ``classic``, ``hard_weight``, ``*_from_features``, ``*_blocks``, ``rerank`` |
"""
