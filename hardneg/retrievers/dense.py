"""Dense retrieval: sentence-transformers embeddings (normalized, cached on disk) searched with faiss in batches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hardneg.models import load_sentence_transformer


def text_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def encode(model, texts: list[str], cfg, prompt: str, desc: str) -> np.ndarray:
    texts = [prompt + t for t in texts] if prompt else texts
    emb = model.encode(
        texts,
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=len(texts) > cfg.batch_size,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


class Dense:
    name = "dense"

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> None:
        model = load_sentence_transformer(cfg.model, cfg.device, cfg.max_seq_length, cfg.allow_download)
        emb = encode(model, texts, cfg, cfg.doc_prompt, "encoding corpus")
        dense_dir = Path(index_dir) / "dense"
        dense_dir.mkdir(exist_ok=True)
        np.save(dense_dir / "embeddings.npy", emb)
        params = {
            "model": cfg.model,
            "doc_prompt": cfg.doc_prompt,
            "normalized": True,
            "dtype": "float32",
            "dim": int(emb.shape[1]),
            "max_seq_length": model.max_seq_length,
            "text_sha256": text_digest(texts),
        }
        (dense_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n")

    def __init__(self, index_dir: Path, cfg):
        import faiss

        self.cfg = cfg
        self.embeddings = np.load(Path(index_dir) / "dense" / "embeddings.npy", mmap_mode="r")
        self.index = faiss.IndexFlatIP(self.embeddings.shape[1])
        self.index.add(np.ascontiguousarray(self.embeddings, dtype=np.float32))
        self.model = load_sentence_transformer(cfg.model, cfg.device, cfg.max_seq_length, cfg.allow_download)

    def search(self, queries: list[str], k: int):
        q = encode(self.model, queries, self.cfg, self.cfg.query_prompt, "encoding queries")
        kk = min(k, self.index.ntotal)
        score, idx = self.index.search(q, kk)
        if kk < k:
            idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
            score = np.pad(score, ((0, 0), (0, k - kk)), constant_values=np.nan)
        return idx.astype(np.int64), score.astype(np.float32), None
