"""Plain, slow implementations written directly from the reference README (R1, R2, M, C).

They follow the definitions line by line with Python loops and dense N x N arrays, so they are easy to
check by eye; the tests and ``bench/bench_postprocess.py`` compare the fast ``reid`` functions with them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from reid.retrieval.distance import squared_euclidean

CMC_CONFIGS = ("allshots", "cuhk03", "market1501")


def plain_classic(qg, qq, gg, k1=20, k2=6, lambda_value=0.3):
    """Classic re-ranking (README R1) from the three squared-Euclidean distance blocks; (m, n) float32."""
    m = qg.shape[0]
    total = qg.shape[0] + qg.shape[1]
    squared = np.block([[qq, qg], [qg.T, gg]]).astype(np.float32) ** 2
    o = (squared / squared.max(axis=0)).T
    rank = np.argsort(o, axis=1)
    half = int(np.around(k1 / 2)) + 1
    v = np.zeros((total, total), np.float32)
    for i in range(total):
        r = [f for f in rank[i, :k1 + 1] if i in rank[f, :k1 + 1]]
        expansion = list(r)
        for c in r:
            rc = [e for e in rank[c, :half] if c in rank[e, :half]]
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expansion += rc
        e = np.unique(expansion)
        w = np.exp(-o[i, e])
        v[i, e] = w / np.sum(w)
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(total)])
    s = np.stack([np.minimum(v[i], v).sum(axis=1) for i in range(m)])
    jaccard = 1 - s / (2 - s)
    return (jaccard * lambda_value + o[:m] * (1 - lambda_value))[:, m:].astype(np.float32)


def plain_hard_weight(q, g, k1=20, k2=6, lambda_value=0.7, threshold=2 / 3):
    """Hard-weight post-processing (README R2) from L2-normalised float32 features; (m, n) float32."""
    q, g = torch.from_numpy(q), torch.from_numpy(g)
    m, n = len(q), len(g)
    z = torch.cat([q, g])
    d_all = squared_euclidean(z, z)
    tq = torch.topk(d_all[:m], k1, dim=1, largest=False).indices.tolist()
    tg_all = torch.topk(d_all[m:], k1, dim=1, largest=False).indices.tolist()
    tgg = torch.topk(d_all[m:, m:], k1, dim=1, largest=False).indices.tolist()
    thalf = [row[:k1 // 2] for row in tgg]
    h = [[x for x in thalf[a] if a in thalf[x]] for a in range(n)]
    q_vec, g_vec = torch.zeros(m, n), torch.zeros(n, n)
    for p in range(m):
        r = [t - m for t in tq[p] if t >= m and p in tg_all[t - m]]
        p0, walk, merged, extended = set(r), list(r), set(r), False
        i = 0
        while i < len(walk):  # the published loop walks a list that its first merge extends
            cand = walk[i]
            if len(p0 & set(h[cand])) >= threshold * len(h[cand]):
                merged |= set(h[cand])
                if not extended:
                    walk += h[cand]
                    extended = True
            i += 1
        q_vec[p, sorted(merged)] = 1
    for a in range(n):
        r = [x for x in tgg[a] if a in tgg[x]]
        others, merged = r[1:], set(r)
        for x in others:
            if len(set(others) & set(h[x])) >= threshold * len(h[x]):
                merged |= set(h[x])
        g_vec[a, sorted(merged)] = 1
    for p in range(m):  # in place: earlier queries are already expanded
        total = torch.zeros(n)
        for j in tq[p][:k2]:
            total += q_vec[j] if j < m else g_vec[j - m]
        q_vec[p] = total / len(tq[p][:k2])
    for a in range(n):
        total = torch.zeros(n)
        for x in tgg[a][1:k2 + 1]:
            total += g_vec[x]
        g_vec[a] = total / len(tgg[a][1:k2 + 1])
    inter = torch.minimum(q_vec[:, None, :], g_vec[None, :, :]).sum(2)
    union = torch.maximum(q_vec[:, None, :], g_vec[None, :, :]).sum(2)
    jaccard = 1 - inter / union
    return ((1 - lambda_value) * F.normalize(squared_euclidean(q, g), p=2, dim=1) + lambda_value * jaccard).numpy()


def plain_scores(dist, q_ids, g_ids, q_cams, g_cams, topk=20):
    """mAP, mINP and the three CMC curves (README M, C) query by query; cuhk03 draws from np.random."""
    aps, inps = [], []
    curves = {name: np.zeros(topk) for name in CMC_CONFIGS}
    counts = dict.fromkeys(CMC_CONFIGS, 0)
    for i in range(len(q_ids)):
        order = np.argsort(dist[i])
        ids, cams, d = g_ids[order], g_cams[order], dist[i][order]
        match = ids == q_ids[i]
        valid = (ids != q_ids[i]) | (cams != q_cams[i])
        if match[valid].any():
            aps.append(average_precision_score(match[valid], -d[valid]))
            positions = np.flatnonzero(match[valid])
            hardest = np.sum(d[valid] <= d[valid][positions[-1]])
            inps.append(len(positions) / hardest)
            curves["market1501"][positions[0]:] += positions[0] < topk
            counts["market1501"] += 1
            for j, k in enumerate(positions):
                if k - j < topk:
                    curves["allshots"][k - j:] += 1 / len(positions)
            counts["allshots"] += 1
        separate = valid & (cams != q_cams[i])
        if match[separate].any():
            groups = defaultdict(list)
            for position in np.flatnonzero(separate):
                groups[ids[position]].append(position)
            for _ in range(10):
                kept = sorted(positions[np.random.randint(0, len(positions))] for positions in map(np.array, groups.values()))
                r = [p for p in kept if match[p]][0]
                rank = kept.index(r)
                if rank < topk:
                    curves["cuhk03"][rank:] += 0.1
            counts["cuhk03"] += 1
    return np.mean(aps), np.mean(inps), {k: curves[k] / counts[k] for k in curves}


def plain_similarity_fusion(values, weights=None):
    """README F1 with weights: sum_k w_k v_k / sum_k w_k (left to right, float64), rounded to 5 decimals."""
    weights = [1.0] * len(values) if weights is None else [float(w) for w in weights]
    total = sum(w * np.asarray(v, np.float64) for w, v in zip(weights, values))
    return np.round(total / sum(weights), 5)


def plain_dissimilarity_fusion(values, topk=15):
    """README F2, row by row with Python lists: (fused (m, n) float64, per-query weights (m, M))."""
    values = [np.asarray(v, np.float64) for v in values]
    count = len(values)
    needed = count // 2 + 1
    fused, weights = np.zeros(values[0].shape), np.zeros((values[0].shape[0], count))
    for row in range(values[0].shape[0]):
        tops = [set(np.argsort(v[row], kind="stable")[:topk].tolist()) for v in values]
        good = {c for c in set().union(*tops) if sum(c in top for top in tops) >= needed}
        shared = [len(good & top) for top in tops]
        total = sum(shared)
        w = [1 / count] * count if total == 0 else [a / total if a else 0.1 for a in shared]
        inverse = sum(1 / x for x in w)
        w = [1 / (x * inverse) for x in w]  # the published order of operations (not (1 / x) / inverse: one ulp apart)
        weights[row] = w
        cells = [v[row].tolist() for v in values]  # Python floats: Python's round, not numpy's
        fused[row] = [round(sum(w[k] * cells[k][column] for k in range(count)), 5) for column in range(len(cells[0]))]
    return fused, weights
