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

        self.cfg = cfg
        self.model = bm25s.BM25.load(str(Path(index_dir) / "bm25s"), mmap=True, load_vocab=True, show_progress=False)
        self.n_docs = int(self.model.scores["num_docs"])

    def search(self, queries: list[str], k: int):
        import bm25s

        kk = min(k, self.n_docs)
        tokens = bm25s.tokenize(queries, stopwords=self.cfg.stopwords or None, show_progress=False,
                                allow_empty=True, return_ids=False)
        vocab = self.model.vocab_dict
        tokens = [[t for t in q if t in vocab] for q in tokens]
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        score = np.full((len(queries), k), np.nan, dtype=np.float32)
        nonempty = [i for i, q in enumerate(tokens) if q]
        if nonempty:
            docs, scores = self.model.retrieve([tokens[i] for i in nonempty], k=kk, show_progress=False, n_threads=1)
            sub_idx, sub_score = _pad(list(docs), list(scores), k)
            idx[nonempty], score[nonempty] = sub_idx, sub_score
        return idx, score, None

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
