"""Hybrid retrieval: bm25s and dense runs fused by reciprocal rank (score = sum of 1 / (rrf_k + rank))."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hardneg.retrievers.bm25 import Bm25s
from hardneg.retrievers.dense import Dense


def rrf(runs: dict[str, tuple[np.ndarray, np.ndarray]], k: int, rrf_k: int):
    """Fuse several (doc_index, score) runs of the same queries; return the fused top k and each hit's sources."""
    names = list(runs)
    n = next(iter(runs.values()))[0].shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    score = np.full((n, k), np.nan, dtype=np.float32)
    source = np.full((n, k), None, dtype=object)
    for i in range(n):
        fused: dict[int, float] = {}
        found: dict[int, list[str]] = {}
        for name in names:
            for rank, doc in enumerate(runs[name][0][i], 1):
                if doc < 0:
                    break
                fused[doc] = fused.get(doc, 0.0) + 1.0 / (rrf_k + rank)
                found.setdefault(doc, []).append(name)
        order = sorted(fused, key=lambda d: (-fused[d], d))[:k]
        idx[i, : len(order)] = order
        score[i, : len(order)] = [fused[d] for d in order]
        source[i, : len(order)] = ["+".join(found[d]) for d in order]
    return idx, score, source


class Hybrid:
    name = "hybrid"
    parts = {"bm25": Bm25s, "dense": Dense}

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> None:
        for cls in Hybrid.parts.values():
            cls.build(texts, index_dir, cfg)

    def __init__(self, index_dir: Path, cfg, rrf_k: int = 60):
        self.retrievers = {name: cls(index_dir, cfg) for name, cls in self.parts.items()}
        self.rrf_k = rrf_k

    def search(self, queries: list[str], k: int):
        runs = {name: r.search(queries, k)[:2] for name, r in self.retrievers.items()}
        return rrf(runs, k, self.rrf_k)
