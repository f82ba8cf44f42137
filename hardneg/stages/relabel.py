"""`relabel`: give every row a final label, promoting confident false negatives to positives with provenance.

A non-positive candidate whose teacher score reaches the query's reference positive score (the `max` of its positives
by default: only candidates the teacher likes at least as much as every labeled positive), or an absolute
`threshold`, becomes `label = positive, label_source = teacher`, at most `max_promoted_per_query` per query,
highest score first. Labeled positives are `positive / qrels`; kept candidates `negative / rule`; the rest
`dropped / rule`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import RelabelConfig, asdict
from hardneg.io.stagedir import StageWriter, part_paths, read_part, require_finished
from hardneg.stages.filter import positive_reference


def relabel_table(filtered: pa.Table, cfg: RelabelConfig) -> pa.Table:
    """Pure: filtered rows -> the same rows with `label` and `label_source`."""
    df = pl.from_arrow(filtered).with_row_index("_row")
    df = df.join(positive_reference(df, cfg.positive_reference), on="query_id", how="left").sort("_row")
    s = pl.col("teacher_score")
    confident = s >= pl.col("_pos")
    if cfg.threshold is not None:
        confident = confident | (s >= cfg.threshold)
    candidate = ~pl.col("is_positive") & confident & pl.lit(cfg.promote)
    order = pl.when(candidate).then(-s).otherwise(None).rank("ordinal").over("query_id")
    promoted = candidate & (order <= cfg.max_promoted_per_query)
    df = df.with_columns(
        pl.when(pl.col("is_positive") | promoted).then(pl.lit("positive"))
        .when(pl.col("keep")).then(pl.lit("negative"))
        .otherwise(pl.lit("dropped")).alias("label"),
        pl.when(pl.col("is_positive")).then(pl.lit("qrels"))
        .when(promoted).then(pl.lit("teacher"))
        .otherwise(pl.lit("rule")).alias("label_source"),
    )
    return schemas.conform(df.to_arrow(), schemas.RELABELED, "relabeled")


def run(filtered_dir: Path, out: Path, cfg: RelabelConfig, overwrite: bool = False) -> dict:
    require_finished(filtered_dir, "filter")
    with StageWriter(out, "relabel", asdict(cfg), inputs=[filtered_dir], overwrite=overwrite) as w:
        for path in part_paths(filtered_dir):
            if not w.has(path.name):
                w.write_table(path.name, relabel_table(read_part(path, schemas.FILTERED), cfg))
        return w.finish()
