"""Cross-encoder teacher (`sentence_transformers.CrossEncoder`, any name or local path).

Scores are the raw logits (no sigmoid), so thresholds mean the same on every run; pairs are sorted by length
before batching so that a batch pads to similar lengths, then put back in order.
"""

from __future__ import annotations

import numpy as np

from hardneg.errors import HardnegError
from hardneg.models import load_cross_encoder


class CrossEncoderTeacher:
    activation = "none (raw logits)"

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = load_cross_encoder(cfg.model, cfg.device, cfg.max_length, cfg.allow_download, cfg.dtype)

    def score(self, queries: list[str], docs: list[str]) -> np.ndarray:
        import torch

        if not queries:
            return np.zeros(0, dtype=np.float32)
        order = np.argsort([len(q) + len(d) for q, d in zip(queries, docs)], kind="stable")
        pairs = [(queries[i], docs[i]) for i in order]
        with torch.inference_mode():
            logits = self.model.predict(
                pairs,
                batch_size=self.cfg.batch_size,
                activation_fn=torch.nn.Identity(),
                convert_to_numpy=True,
                show_progress_bar=len(pairs) > self.cfg.batch_size,
            )
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 2:
            if logits.shape[1] == 1:
                logits = logits[:, 0]
            elif logits.shape[1] == 2:
                logits = logits[:, 1] - logits[:, 0]
            else:
                raise HardnegError(
                    f"model {self.cfg.model!r}: has {logits.shape[1]} output labels; a teacher needs 1 (relevance)"
                )
        out = np.empty_like(logits)
        out[order] = logits
        return out
