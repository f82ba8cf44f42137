"""Bi-encoder teacher: cosine similarity of normalized sentence-transformers embeddings.

Each distinct text is encoded once per call, however many pairs it appears in. `backend` torch, onnx or onnx-int8
(`--backend`, see hardneg.onnx_backend) picks the runtime of the encoder.
"""

from __future__ import annotations

import numpy as np

from hardneg.models import load_sentence_transformer
from hardneg.retrievers.dense import encode


class BiEncoderTeacher:
    activation = "cosine"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = load_sentence_transformer(cfg.model, cfg.device, cfg.max_seq_length, cfg.allow_download,
                                               cfg.dtype, backend=cfg.backend)

    def _embed(self, texts: list[str], prompt: str, desc: str):
        unique = list(dict.fromkeys(texts))
        emb = encode(self.model, unique, self.cfg, prompt, desc)
        pos = {t: i for i, t in enumerate(unique)}
        return emb, np.fromiter((pos[t] for t in texts), dtype=np.int64, count=len(texts))

    def score(self, queries: list[str], docs: list[str]) -> np.ndarray:
        if not queries:
            return np.zeros(0, dtype=np.float32)
        q_emb, q_idx = self._embed(queries, self.cfg.query_prompt, "teacher: queries")
        d_emb, d_idx = self._embed(docs, self.cfg.doc_prompt, "teacher: documents")
        return np.einsum("ij,ij->i", q_emb[q_idx], d_emb[d_idx]).astype(np.float32)
