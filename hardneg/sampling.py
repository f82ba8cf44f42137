"""Choosing N rows per query among eligible candidates: `top`, `hardest`, `random` (seeded) and `simans`.

Used by `filter` (`--negatives-per-query N --sampling ...`) and open to `mine`. Every strategy is deterministic for
a given seed and independent of how rows are split into parts: the random key of a row is a seeded hash of its
(query_id, doc_id), not a draw from a shared generator.

* `top`: the best retriever ranks first.
* `hardest`: the highest scores first (in `filter`, the teacher's: the survivors closest below the rules' threshold;
  in `mine`, the retriever's). With a hybrid retriever this differs from `top`, whose fused rank mixes in bm25.
* `random`: uniform without replacement.
* `simans` (SimANS, arXiv 2210.11773): without replacement, with weight exp(-a * (s - p - b)^2), where s is the
  candidate's score and p the query's positive score: ambiguous candidates near the positive are preferred, neither
  the very top (likely false negatives) nor easy ones. Weighted sampling uses Efraimidis-Spirakis keys
  (u ** (1 / w), largest first).
"""

from __future__ import annotations

import polars as pl

STRATEGIES = ("top", "hardest", "random", "simans")
_NEVER = 2**31 - 1


def uniform(seed: int) -> pl.Expr:
    """A per-row number in (0, 1) from a seeded hash of (query_id, doc_id)."""
    h = pl.struct("query_id", "doc_id").hash(seed=seed) // 2048  # keep 53 significant bits
    return (h.cast(pl.Float64) + 0.5) / float(2**53)


def order_key(strategy: str, seed: int = 0, score: str = "teacher_score", pos: str = "_pos",
              a: float = 0.5, b: float = 0.0) -> pl.Expr:
    """Smaller key = chosen first."""
    if strategy == "top":
        return pl.col("rank").fill_null(_NEVER).cast(pl.Float64)
    if strategy == "hardest":
        return (-pl.col(score).cast(pl.Float64)).fill_null(float(_NEVER))
    if strategy == "random":
        return uniform(seed)
    if strategy == "simans":
        w = (-a * (pl.col(score) - pl.col(pos) - b) ** 2).exp().clip(lower_bound=1e-300)
        return -(uniform(seed).log() / w)  # -log(u ** (1/w)): larger u ** (1/w) first
    raise ValueError(f"unknown sampling strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


def select(df: pl.DataFrame, eligible: pl.Expr, n: int, strategy: str, **kwargs) -> pl.Series:
    """Boolean mask: the first `n` eligible rows of each query by `strategy` (all eligible rows when n <= 0)."""
    if n <= 0:
        return df.select(eligible.alias("selected"))["selected"]
    key = pl.when(eligible).then(order_key(strategy, **kwargs)).otherwise(float("inf"))
    ordinal = pl.struct(key.alias("k"), pl.col("doc_id")).rank("ordinal").over("query_id")
    # rank() on a struct orders by key then doc_id, so ties break the same way everywhere
    return df.select((eligible & (ordinal <= n)).fill_null(False).alias("selected"))["selected"]
