"""Sparse retrieval: bm25s (default, sparse matrices, fast) and rank-bm25 (the reference implementation).

Both use the same tokenizer (bm25s' regex tokenizer, lower-cased, English stopwords) so that they rank alike.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def tokenize(texts: list[str], stopwords: str, show_progress: bool = False) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        texts, stopwords=stopwords or None, return_ids=False, show_progress=show_progress, allow_empty=True
    )


def _pad(rows_idx, rows_score, k):
    n = len(rows_idx)
    idx = np.full((n, k), -1, dtype=np.int64)
    score = np.full((n, k), np.nan, dtype=np.float32)
    for i, (ri, rs) in enumerate(zip(rows_idx, rows_score)):
        keep = rs > 0  # a zero BM25 score shares no term with the query: not a retrieved document
        ri, rs = ri[keep][:k], rs[keep][:k]
        idx[i, : len(ri)] = ri
        score[i, : len(rs)] = rs
    return idx, score


MAX_POSTINGS = 20_000_000  # matches scored at once by Bm25s.search (about 250 MB)


class Bm25s:
    """BM25 over a scipy sparse matrix (bm25s); the index is its arrays plus a params JSON."""

    name = "bm25"

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> None:
        import bm25s

        model = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b, method="lucene")
        tokens = bm25s.tokenize(texts, stopwords=cfg.stopwords or None, show_progress=True)
        model.index(tokens, show_progress=True)
        model.save(str(Path(index_dir) / "bm25s"), show_progress=False)

    def __init__(self, index_dir: Path, cfg):
        import bm25s
        from scipy import sparse

        self.cfg = cfg
        self.model = bm25s.BM25.load(str(Path(index_dir) / "bm25s"), mmap=True, load_vocab=True, show_progress=False)
        self.n_docs = int(self.model.scores["num_docs"])
        s = self.model.scores
        # term -> (doc, score) postings as a scipy matrix: a batch of queries is one sparse product in C
        self.postings = sparse.csr_matrix((s["data"], s["indices"], s["indptr"]),
                                          shape=(len(s["indptr"]) - 1, self.n_docs))

    def search(self, queries: list[str], k: int):
        """Top k per query: query-term counts x postings, in sub-batches of at most MAX_POSTINGS matches, so memory
        is bounded by the postings of a few queries, never queries x corpus."""
        from scipy import sparse

        ids = [self.model.get_tokens_ids(q) for q in tokenize(queries, self.cfg.stopwords)]
        lengths = np.diff(self.postings.indptr)
        rows_idx, rows_score = [], []
        start = 0
        while start < len(ids):
            end, load = start, 0
            while end < len(ids) and (end == start or load + lengths[ids[end]].sum() <= MAX_POSTINGS):
                load += lengths[ids[end]].sum()
                end += 1
            r = [i - start for i in range(start, end) for _ in ids[i]]
            c = [t for i in range(start, end) for t in ids[i]]
            q = sparse.csr_matrix((np.ones(len(c), dtype=np.float32), (r, c)),
                                  shape=(end - start, self.postings.shape[0]))
            hits = (q @ self.postings).tocsr()  # duplicate query terms count twice, as in BM25's sum over terms
            for i in range(end - start):
                a, b = hits.indptr[i], hits.indptr[i + 1]
                d, s = hits.indices[a:b], hits.data[a:b]
                if len(s) > k:
                    keep = s >= -np.partition(-s, k - 1)[k - 1]
                    d, s = d[keep], s[keep]
                order = np.lexsort((d, -s))[:k]  # best score first, ties by corpus order
                rows_idx.append(d[order])
                rows_score.append(s[order])
            start = end
        return (*_pad(rows_idx, rows_score, k), None)

    def score_docs(self, queries: list[str], rows: list[np.ndarray]) -> list[np.ndarray]:
        """BM25 scores of the given document rows for each query (for positives the top-k missed)."""
        out = []
        for q, r in zip(tokenize(queries, self.cfg.stopwords), rows):
            ids = self.model.get_tokens_ids(q)
            if len(r) == 0 or not ids:
                out.append(np.zeros(len(r), dtype=np.float32))
            else:
                out.append(self.model.get_scores(ids)[np.asarray(r, dtype=np.int64)].astype(np.float32))
        return out


class RankBm25:
    """rank-bm25's BM25Okapi: pure Python, slow on large corpora; kept as the reference backend."""

    name = "rank-bm25"

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> None:
        from rank_bm25 import BM25Okapi

        model = BM25Okapi(tokenize(texts, cfg.stopwords, show_progress=True), k1=cfg.bm25_k1, b=cfg.bm25_b)
        with open(Path(index_dir) / "rank_bm25.pkl", "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        (Path(index_dir) / "rank_bm25.json").write_text(json.dumps({"k1": cfg.bm25_k1, "b": cfg.bm25_b}))

    def __init__(self, index_dir: Path, cfg):
        self.cfg = cfg
        with open(Path(index_dir) / "rank_bm25.pkl", "rb") as fh:
            self.model = pickle.load(fh)

    def search(self, queries: list[str], k: int):
        rows_idx, rows_score = [], []
        for q in tokenize(queries, self.cfg.stopwords):
            scores = self.model.get_scores(q).astype(np.float32)
            top = np.argsort(-scores, kind="stable")[:k]
            rows_idx.append(top)
            rows_score.append(scores[top])
        return (*_pad(rows_idx, rows_score, k), None)

    def score_docs(self, queries: list[str], rows: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self.model.get_scores(q)[np.asarray(r, dtype=np.int64)].astype(np.float32) if len(r) else
            np.zeros(0, dtype=np.float32)
            for q, r in zip(tokenize(queries, self.cfg.stopwords), rows)
        ]
