"""`filter`: positive-aware rules decide which candidates are safe negatives; every dropped row keeps its reason.

Rules compare a candidate's teacher score `s` with its query's reference positive score `p` (the min, mean or max of
the query's positives' teacher scores; `min` by default, the safe choice):

* `perc-pos`   (NV-Retriever TopK-PercPos): drop if s > p - |p| * (1 - ratio)   (= ratio * p for p > 0)
* `margin-pos` (TopK-MarginPos):            drop if s > p - margin
* `max-score`  (TopK-Abs):                  drop if s > max_score
* `min-score`:                              drop if s < min_score   (too easy to teach anything)

The first rule that fires names the reason. Survivors beyond `negatives_per_query` are
dropped as `not_sampled`; which survivors stay is chosen by `sampling` (`top`: best retriever rank first,
`random`, `simans`; see hardneg.sampling). Labeled positives are always kept.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import FilterConfig, asdict
from hardneg.io.stagedir import StageWriter, part_paths, read_part, require_finished
from hardneg.sampling import select

REASONS = {
    "perc-pos": "perc_pos",
    "margin-pos": "margin_pos",
    "max-score": "above_max_score",
    "min-score": "below_min_score",
}


def positive_reference(df: pl.DataFrame, how: str) -> pl.DataFrame:
    agg = {"min": pl.col("teacher_score").min(), "mean": pl.col("teacher_score").mean(),
           "max": pl.col("teacher_score").max()}[how]
    return df.filter(pl.col("is_positive")).group_by("query_id").agg(agg.alias("_pos"))


def _condition(rule: str, cfg: FilterConfig) -> pl.Expr:
    s, p = pl.col("teacher_score"), pl.col("_pos")
    return {
        "perc-pos": lambda: s > p - p.abs() * (1 - cfg.ratio),
        "margin-pos": lambda: s > p - cfg.margin,
        "max-score": lambda: s > cfg.max_score,
        "min-score": lambda: s < cfg.min_score,
    }[rule]()


def filter_table(scored: pa.Table, cfg: FilterConfig) -> pa.Table:
    """Pure: scored rows -> the same rows, in the same order, with `keep` and `reason`."""
    df = pl.from_arrow(scored).with_row_index("_row")
    df = df.join(positive_reference(df, cfg.positive_reference), on="query_id", how="left").sort("_row")
    reason = pl.when(pl.col("is_positive")).then(pl.lit(None, dtype=pl.String))
    for rule in cfg.rules:
        reason = reason.when(_condition(rule, cfg)).then(pl.lit(REASONS[rule]))
    df = df.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias("reason"))
    if cfg.negatives_per_query > 0:
        survivor = pl.col("reason").is_null() & ~pl.col("is_positive")
        chosen = select(df, survivor, cfg.negatives_per_query, cfg.sampling, seed=cfg.seed, a=cfg.simans_a,
                        b=cfg.simans_b)
        df = df.with_columns(
            pl.when(survivor & ~chosen).then(pl.lit("not_sampled")).otherwise(pl.col("reason")).alias("reason")
        )
    df = df.with_columns(pl.col("reason").is_null().alias("keep"))
    return schemas.conform(df.to_arrow(), schemas.FILTERED, "filtered")


def run(scored_dir: Path, out: Path, cfg: FilterConfig, overwrite: bool = False) -> dict:
    require_finished(scored_dir, "score")
    with StageWriter(out, "filter", asdict(cfg), inputs=[scored_dir], overwrite=overwrite) as w:
        for path in part_paths(scored_dir):
            if not w.has(path.name):
                w.write_table(path.name, filter_table(read_part(path, schemas.SCORED), cfg))
        return w.finish()
