"""Pure helpers on teacher-scored rows, shared by the stages that compare a candidate with its query's positives
(filter, judge, relabel) and by the report, which shows what they compared."""

from __future__ import annotations

import polars as pl


def positive_reference(df: pl.DataFrame, how: str, floor_rank: int = 0) -> pl.DataFrame:
    """Per query `_pos`: the min/mean/max of its positives' teacher scores, raised to the weakest score among its
    candidates ranked 1..floor_rank when it is below all of them (floor_rank > 0)."""
    agg = {"min": pl.col("teacher_score").min(), "mean": pl.col("teacher_score").mean(),
           "max": pl.col("teacher_score").max()}[how]
    ref = df.filter(pl.col("is_positive")).group_by("query_id").agg(agg.alias("_pos"))
    if floor_rank > 0:
        floor = (df.filter(~pl.col("is_positive") & (pl.col("rank") <= floor_rank))
                 .group_by("query_id").agg(pl.col("teacher_score").min().alias("_floor")))
        ref = (ref.join(floor, on="query_id", how="left")
               .with_columns(pl.max_horizontal("_pos", "_floor").alias("_pos")).drop("_floor"))
    return ref
