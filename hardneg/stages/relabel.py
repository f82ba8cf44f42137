"""`relabel`: give every row a final label, and decide what happens to suspected false negatives, with provenance.

A candidate is a *suspected false negative* when `filter` dropped it by a rule (not `not_sampled` or
`too_few_negatives`) and its teacher score reaches the query's reference positive score (the `max` of its positives by
default: only candidates the teacher likes at least as much as every labeled positive) or an absolute `threshold`, or
when `filter` found it a near-duplicate of a positive. A negative the filter kept is never a suspect: the filter's
rules decide what is safe, relabel only decides what becomes of what they removed. `policy` says what to do with
suspects:

* `relabel` (RLHN, RocketQA): promote to `label = positive`, at most `max_promoted_per_query` per query, highest
  score first (near-duplicates first); the rest of the suspects are `dropped`;
* `drop` (the default): never train on them: `label = dropped`, neither negative nor positive;
* `keep-flagged`: `label = flagged`, for a later judge (an LLM, a person); export uses them neither as positives nor
  as negatives.

`label_source` records who decided: `qrels` (labeled positives), `teacher` (promoted or flagged by teacher score),
`rule` (promoted or flagged as a near-duplicate, and every negative or dropped row). Labeled positives are `positive / qrels`; other kept candidates
`negative / rule`; other dropped ones `dropped / rule`. `promote = false` is the older spelling of `policy = drop`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import RelabelConfig, asdict
from hardneg.executor import LOCAL, Execution
from hardneg.io.stagedir import StageWriter, finished_parts, part_paths, read_part, require_finished
from hardneg.stages.filter import positive_reference


def relabel_table(filtered: pa.Table, cfg: RelabelConfig) -> pa.Table:
    """Pure: filtered rows -> the same rows with `label` and `label_source`."""
    policy = "drop" if not cfg.promote else cfg.policy
    df = pl.from_arrow(filtered).with_row_index("_row")
    df = df.join(positive_reference(df, cfg.positive_reference), on="query_id", how="left").sort("_row")
    s = pl.col("teacher_score")
    by_score = (s >= pl.col("_pos")).fill_null(False)
    if cfg.threshold is not None:
        by_score = by_score | (s >= cfg.threshold).fill_null(False)
    by_rule = (pl.col("reason") == "near_duplicate_of_positive").fill_null(False)
    ruled_out = ~pl.col("keep") & ~pl.col("reason").is_in(["not_sampled", "too_few_negatives"]).fill_null(False)
    suspect = ~pl.col("is_positive") & ruled_out & (by_score | by_rule)
    order = pl.when(suspect).then(pl.struct((~by_rule).alias("r"), (-s).alias("s"))).otherwise(None)
    promoted = suspect & (order.rank("ordinal").over("query_id") <= cfg.max_promoted_per_query)
    if policy != "relabel":
        promoted = pl.lit(False)
    df = df.with_columns(
        pl.when(pl.col("is_positive") | promoted).then(pl.lit("positive"))
        .when(suspect & pl.lit(policy == "keep-flagged")).then(pl.lit("flagged"))
        .when(suspect).then(pl.lit("dropped"))
        .when(pl.col("keep")).then(pl.lit("negative"))
        .otherwise(pl.lit("dropped")).alias("label"),
        pl.when(pl.col("is_positive")).then(pl.lit("qrels"))
        .when((promoted | pl.lit(policy == "keep-flagged")) & suspect & ~by_rule).then(pl.lit("teacher"))
        .otherwise(pl.lit("rule")).alias("label_source"),
    )
    return schemas.conform(df.to_arrow(), schemas.RELABELED, "relabeled")


def run(filtered_dir: Path, out: Path, cfg: RelabelConfig, overwrite: bool = False,
        execution: Execution = LOCAL) -> dict:
    require_finished(filtered_dir, "filter")
    parts = finished_parts(filtered_dir, "filter")
    with StageWriter(out, "relabel", asdict(cfg), inputs=[filtered_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        for n, path in enumerate(parts):
            if execution.owns(n) and not w.has(path.name):
                w.write_table(path.name, relabel_table(read_part(path, schemas.FILTERED), cfg))
        if not w.claim_finish([p.name for p in parts]):
            return w.shard_pending()
        labels = pl.concat([pl.read_parquet(p, columns=["label", "label_source"]) for p in part_paths(w.out)])
        counts = labels.group_by("label", "label_source").len().sort("label", "label_source")
        return w.finish(summary={"policy": "drop" if not cfg.promote else cfg.policy,
                                 "labels": {f"{a}/{b}": int(n) for a, b, n in counts.iter_rows()}})
