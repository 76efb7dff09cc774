"""A slow, literal transcription of the reference README's R1 and R2 (test oracle only).

Used to check the sparse re-rankings on cases larger than the stored reference cases. Written
for clarity, not speed: Python loops over rows, dense (N, N) matrices; keep inputs small.
"""

from __future__ import annotations

import numpy as np
import torch

from reid.distance import squared_euclidean


def classic_dense(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """R1 on the distances of features q (m, d) and g (n, d)."""
    m = len(q)
    qg, qq, gg = squared_euclidean(q, g), squared_euclidean(q, q), squared_euclidean(g, g)
    block = np.block([[qq, qg], [qg.T, gg]])
    fourth = (block * block).astype(np.float32)
    o = (fourth / fourth.max(axis=0)).T
    total = len(o)
    rank = np.argsort(o, axis=1)
    v = np.zeros_like(o)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(total):
        forward = rank[i, :k1 + 1]
        recip = [f for f in forward if i in rank[f, :k1 + 1]]
        expansion = list(recip)
        for c in recip:
            fc = rank[c, :half]
            rc = [e for e in fc if c in rank[e, :half]]
            if len(set(rc) & set(recip)) > 2.0 / 3 * len(rc):
                expansion += rc
        members = np.unique(expansion)
        w = np.exp(-o[i, members])
        v[i, members] = w / np.sum(w)
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(total)])
    jaccard = np.zeros((m, total), dtype=np.float32)
    for i in range(m):
        shared = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1 - shared / (2 - shared)
    final = jaccard * lambda_value + o[:m] * (1 - lambda_value)
    return final[:, m:].astype(np.float32)


def hard_weight_dense(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.7, expansion_threshold: float = 2 / 3,
                      alias_walk: bool = True) -> np.ndarray:
    """R2 on features q (m, d) and g (n, d), following the README step by step.

    alias_walk=False drops the list-aliasing quirk (to show that a test case depends on it).
    """
    m, n = len(q), len(g)
    d_qg = torch.from_numpy(squared_euclidean(q, g))
    d_all = torch.from_numpy(squared_euclidean(np.concatenate([q, g]), np.concatenate([q, g])))
    t_q = torch.topk(d_all[:m], k1, dim=1, largest=False)[1].tolist()
    t_all = torch.topk(d_all[m:], k1, dim=1, largest=False)[1].tolist()
    t_gg = torch.topk(d_all[m:, m:], k1, dim=1, largest=False)[1].tolist()
    t_half = [row[:k1 // 2] for row in t_gg]
    r_q = [[t - m for t in t_q[p] if t >= m and p in t_all[t - m]] for p in range(m)]
    r_g = [[h for h in t_gg[x] if x in t_gg[h]] for x in range(n)]
    h_g = [[h for h in t_half[x] if x in t_half[h]] for x in range(n)]

    expanded_q = []
    for p in range(m):
        base = set(r_q[p])
        walk, current, extended = list(r_q[p]), list(r_q[p]), False
        i = 0
        while i < len(walk):
            hg = h_g[walk[i]]
            if len(base & set(hg)) >= len(hg) * expansion_threshold:
                current = sorted(set(current) | set(hg))
                if alias_walk and not extended:
                    walk += hg
                    extended = True
            i += 1
        expanded_q.append(current)
    expanded_g = []
    for x in range(n):
        others = r_g[x][1:]
        current = list(r_g[x])
        for h in others:
            if len(set(others) & set(h_g[h])) >= len(h_g[h]) * expansion_threshold:
                current = sorted(set(current) | set(h_g[h]))
        expanded_g.append(current)

    qv, gv = torch.zeros((m, n)), torch.zeros((n, n))
    for p, members in enumerate(expanded_q):
        qv[p, members] = 1
    for x, members in enumerate(expanded_g):
        gv[x, members] = 1
    for p in range(m):
        acc = torch.zeros(n)
        for j in t_q[p][:k2]:
            acc += qv[j] if j < m else gv[j - m]
        qv[p] = acc / k2
    for x in range(n):
        acc = torch.zeros(n)
        for h in t_gg[x][1:k2 + 1]:
            acc += gv[h]
        gv[x] = acc / k2
    jaccard = torch.zeros((m, n))
    for p in range(m):
        inter = torch.minimum(qv[p][None, :], gv).sum(dim=1)
        union = torch.maximum(qv[p][None, :], gv).sum(dim=1)
        jaccard[p] = 1 - inter / union
    out = (1 - lambda_value) * torch.nn.functional.normalize(d_qg, p=2, dim=1) + lambda_value * jaccard
    return out.numpy()
