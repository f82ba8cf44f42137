"""Bi-encoder teacher: cosine similarity of normalized sentence-transformers embeddings.

Each distinct text is embedded once: looked up first in `sources` (a dense index built with the same encoder, an
embedding cache; see hardneg.teachers.embeddings), encoded otherwise (and added to the cache). The model is loaded
only when a text must be encoded. `backend` torch, onnx or onnx-int8 (`--backend`, see hardneg.onnx_backend) picks
the runtime of the encoder.
"""

from __future__ import annotations

import numpy as np

from hardneg.models import load_sentence_transformer
from hardneg.retrievers.dense import encode

PAIR_CHUNK = 65536  # pairs multiplied at a time (bounds the gathered vectors in memory)


class BiEncoderTeacher:
    activation = "cosine"

    def __init__(self, cfg, sources=(), cache=None):
        self.cfg = cfg
        self.sources = list(sources)
        self.cache = cache
        self._model = None
        self.counts = {"texts_encoded": 0, "embeddings_reused": 0}

    @property
    def model(self):
        if self._model is None:
            cfg = self.cfg
            self._model = load_sentence_transformer(cfg.model, cfg.device, cfg.max_seq_length, cfg.allow_download,
                                                    cfg.dtype, backend=cfg.backend)
        return self._model

    def embed(self, kind: str, texts: list[str], ids: list[str] | None = None) -> np.ndarray:
        """One normalized float32 vector per (distinct) text of `texts`."""
        emb = None
        todo = np.ones(len(texts), bool)
        for source in [*self.sources, *([self.cache] if self.cache is not None else [])]:
            if not todo.any():
                break
            idx = np.flatnonzero(todo)
            got, found = source.get(kind, [texts[i] for i in idx], [ids[i] for i in idx] if ids else None)
            if found.any():
                if emb is None:
                    emb = np.zeros((len(texts), got.shape[1]), dtype=np.float32)
                emb[idx[found]] = got[found]
                todo[idx[found]] = False
        self.counts["embeddings_reused"] += int(len(texts) - todo.sum())
        if todo.any():
            idx = np.flatnonzero(todo)
            if self.cache is not None:
                self.cache.refresh()  # another worker may have encoded them meanwhile
                got, found = self.cache.get(kind, [texts[i] for i in idx])
                if found.any():
                    if emb is None:
                        emb = np.zeros((len(texts), got.shape[1]), dtype=np.float32)
                    emb[idx[found]] = got[found]
                    self.counts["embeddings_reused"] += int(found.sum())
                    idx = idx[~found]
            if len(idx):
                prompt = self.cfg.query_prompt if kind == "query" else self.cfg.doc_prompt
                new = encode(self.model, [texts[i] for i in idx], self.cfg, prompt, f"teacher: {kind}s")
                if emb is None:
                    emb = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
                emb[idx] = new
                self.counts["texts_encoded"] += len(idx)
                if self.cache is not None:
                    self.cache.add(kind, [texts[i] for i in idx], new)
        return emb if emb is not None else np.zeros((0, 0), np.float32)

    def _distinct(self, kind: str, texts: list[str], ids: list[str] | None):
        unique = list(dict.fromkeys(texts))
        pos = {t: i for i, t in enumerate(unique)}
        uid = None
        if ids is not None:
            first = {}
            for t, d in zip(texts, ids):
                first.setdefault(t, d)
            uid = [first[t] for t in unique]
        emb = self.embed(kind, unique, uid)
        return emb, np.fromiter((pos[t] for t in texts), dtype=np.int64, count=len(texts))

    def score(self, queries: list[str], docs: list[str], doc_ids: list[str] | None = None) -> np.ndarray:
        """Cosine of each (query, document) pair; `doc_ids` (optional) lets an index source find documents by id."""
        if not queries:
            return np.zeros(0, dtype=np.float32)
        q_emb, q_idx = self._distinct("query", queries, None)
        d_emb, d_idx = self._distinct("document", docs, doc_ids)
        out = np.empty(len(queries), dtype=np.float32)
        for s in range(0, len(queries), PAIR_CHUNK):
            e = s + PAIR_CHUNK
            out[s:e] = np.einsum("ij,ij->i", q_emb[q_idx[s:e]], d_emb[d_idx[s:e]])
        return out
