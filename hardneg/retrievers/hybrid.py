"""Hybrid retrieval: bm25s and dense runs, each to its own depth, fused by reciprocal rank or by weighted score.

* `rrf`: score = sum over runs of 1 / (rrf_k + rank).
* `weighted`: each run's scores are min-max normalized per query over the documents it returned, then
  score = (1 - dense_weight) * bm25 + dense_weight * dense; a document a run did not return adds 0 from it.

The `source` of a candidate names the runs that returned it (`bm25`, `dense`, `bm25+dense`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hardneg.retrievers.bm25 import Bm25s
from hardneg.retrievers.dense import Dense


def rrf_contributions(idx: np.ndarray, score: np.ndarray, rrf_k: int) -> np.ndarray:
    return 1.0 / (rrf_k + np.arange(1, idx.shape[1] + 1, dtype=np.float64))[None, :].repeat(idx.shape[0], 0)


def minmax_contributions(idx: np.ndarray, score: np.ndarray) -> np.ndarray:
    valid = (idx >= 0) & ~np.isnan(score)
    s = np.where(valid, score, 0.0).astype(np.float64)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(valid, np.where(hi > lo, (s - np.where(valid, lo, 0.0)) / span, 1.0), 0.0)


def fuse(runs: dict[str, tuple[np.ndarray, np.ndarray]], weights: dict[str, np.ndarray], k: int):
    """Fuse runs of the same queries: a document's score is the sum of its contributions `weights[name][i, j]`.
    Returns the fused top k (doc_index, score, source) and, per query, every fused document's score."""
    names = list(runs)
    n = next(iter(runs.values()))[0].shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    score = np.full((n, k), np.nan, dtype=np.float32)
    source = np.full((n, k), None, dtype=object)
    all_scores = []
    for i in range(n):
        fused: dict[int, float] = {}
        found: dict[int, list[str]] = {}
        for name in names:
            for doc, w in zip(runs[name][0][i], weights[name][i]):
                if doc < 0:
                    break
                doc = int(doc)
                fused[doc] = fused.get(doc, 0.0) + float(w)
                found.setdefault(doc, []).append(name)
        order = sorted(fused, key=lambda d: (-fused[d], d))[:k]
        idx[i, : len(order)] = order
        score[i, : len(order)] = [fused[d] for d in order]
        source[i, : len(order)] = ["+".join(found[d]) for d in order]
        all_scores.append(fused)
    return idx, score, source, all_scores


def rrf(runs: dict[str, tuple[np.ndarray, np.ndarray]], k: int, rrf_k: int):
    """Reciprocal-rank fusion of several (doc_index, score) runs; the fused top k and each hit's sources."""
    return fuse(runs, {name: rrf_contributions(*run, rrf_k) for name, run in runs.items()}, k)[:3]


class Hybrid:
    name = "hybrid"
    parts = {"bm25": Bm25s, "dense": Dense}

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> dict:
        info = {}
        for cls in Hybrid.parts.values():
            info.update(cls.build(texts, index_dir, cfg) or {})
        return info

    def __init__(self, index_dir: Path, cfg, rrf_k: int = 60):
        self.retrievers = {name: cls(index_dir, cfg) for name, cls in self.parts.items()}
        self.rrf_k = rrf_k
        self.fusion = "rrf"
        self.weights = {"bm25": 0.5, "dense": 0.5}
        self.depths = {"bm25": 0, "dense": 0}
        self._last: tuple[list[str], list[dict]] | None = None

    def fuse_with(self, cfg) -> None:
        """Take the fusion options of a MineConfig."""
        self.rrf_k, self.fusion = cfg.rrf_k, cfg.fusion
        self.weights = {"bm25": 1.0 - cfg.dense_weight, "dense": cfg.dense_weight}
        self.depths = {"bm25": cfg.sparse_depth, "dense": cfg.dense_depth}

    def search(self, queries: list[str], k: int):
        runs = {name: r.search(queries, self.depths[name] or k)[:2] for name, r in self.retrievers.items()}
        if self.fusion == "weighted":
            contrib = {name: self.weights[name] * minmax_contributions(*run) for name, run in runs.items()}
        else:
            contrib = {name: rrf_contributions(*run, self.rrf_k) for name, run in runs.items()}
        idx, score, source, all_scores = fuse(runs, contrib, k)
        self._last = (queries, all_scores)
        return idx, score, source

    def score_docs(self, queries: list[str], rows: list[np.ndarray]) -> list[np.ndarray]:
        """Fused scores of the given document rows (0 for a document no run returned); call after `search`."""
        if self._last is None or self._last[0] is not queries:
            raise ValueError("Hybrid.score_docs needs the fused runs of a search() of the same queries")
        return [np.array([fused.get(int(d), 0.0) for d in r], dtype=np.float32)
                for r, fused in zip(rows, self._last[1])]
