"""`relabel`: give every row a final label, and decide what happens to suspected false negatives, with provenance.

A candidate is a *suspected false negative* when `filter` dropped it by a rule (not `not_sampled`,
`too_few_negatives` or `not_scored`) and its teacher score reaches the query's reference positive score (the `max` of its positives by
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

On the output of `hardneg judge` (a judged directory), the LLM judges' verdicts decide too (`label_source = llm`).
RLHN's actions ("Fixing Data That Hurts Performance") are policies; with them the teacher promotes nothing (its
suspects are dropped, as with `drop`) and a candidate judged relevant is

* `remove`: the reason to drop its whole query: every row of the query becomes `dropped / llm`;
* `hn_remove`: `dropped / llm` (never a negative), the rest of the query stays;
* `rlhn`: promoted, `positive / llm`; a query with more than `max_flagged_per_query` candidates judged relevant
  (default 8, as RLHN) is dropped whole (`dropped / llm`).

With `relabel`, `drop` or `keep-flagged` on a judged input, a kept negative judged relevant becomes `dropped / llm`
(no policy trains on a negative an LLM judge called relevant). The filter's other decisions stand: a suspect the
judge cleared stays what the filter made it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import JUDGE_POLICIES, RelabelConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io.stagedir import StageWriter, finished_parts, read_part, require_finished, save_table
from hardneg.rules import RULES
from hardneg.scores import positive_reference


def relabel_table(filtered: pa.Table, cfg: RelabelConfig) -> pa.Table:
    """Pure: filtered rows -> the same rows with `label` and `label_source`."""
    policy = "drop" if not cfg.promote else cfg.policy
    df = pl.from_arrow(filtered).with_row_index("_row")
    df = df.join(positive_reference(df, cfg.positive_reference), on="query_id", how="left").sort("_row")
    s = pl.col("teacher_score")
    by_score = (s >= pl.col("_pos")).fill_null(False)
    if cfg.threshold is not None:
        by_score = by_score | (s >= cfg.threshold).fill_null(False)
    by_rule = (pl.col("reason") == RULES["near-duplicate"].reason).fill_null(False)
    ruled_out = ~pl.col("keep") & ~pl.col("reason").is_in(list(schemas.OTHER_DROP_REASONS)).fill_null(False)
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
    if "judge_relevant" in df.columns or policy in JUDGE_POLICIES:
        df = judge_labels(df, cfg, policy)
    return schemas.conform(df.to_arrow(), schemas.RELABELED, "relabeled")


def judge_labels(df: pl.DataFrame, cfg: RelabelConfig, policy: str) -> pl.DataFrame:
    """Pure: labels of a judged table after the LLM judges' verdicts (see the module doc)."""
    if "judge_relevant" not in df.columns:
        raise HardnegError(f"relabel: policy {policy} acts on an LLM judge's verdicts; run `hardneg judge "
                           f"FILTERED --data DATA --out JUDGED` and relabel JUDGED")
    relevant = (~pl.col("is_positive") & pl.col("judge_relevant")).fill_null(False)
    n_relevant = relevant.cast(pl.Int32).sum().over("query_id")
    label, source = pl.col("label"), pl.col("label_source")
    llm = pl.lit("llm")
    if policy == "remove":
        drop_query = n_relevant > 0
    elif policy == "rlhn":
        drop_query = n_relevant > cfg.max_flagged_per_query
    else:
        drop_query = pl.lit(False)
    if policy == "rlhn":
        label_rel, src_rel = pl.lit("positive"), llm
    elif policy in ("remove", "hn_remove"):
        label_rel, src_rel = pl.lit("dropped"), llm
    else:  # relabel / drop / keep-flagged: only a negative is overruled
        label_rel = pl.when(label == "negative").then(pl.lit("dropped")).otherwise(label)
        src_rel = pl.when(label == "negative").then(llm).otherwise(source)
    return df.with_columns(
        pl.when(drop_query).then(pl.lit("dropped")).when(relevant).then(label_rel).otherwise(label).alias("label"),
        pl.when(drop_query).then(llm).when(relevant).then(src_rel).otherwise(source).alias("label_source"),
    )


def part_stats(relabeled: pa.Table) -> dict:
    """The statistics of one relabeled part that the manifest's summary adds up: rows by `label/label_source`."""
    counts = pl.from_arrow(relabeled.select(["label", "label_source"])).group_by("label", "label_source").len()
    return {"labels": {f"{a}/{b}": int(n) for a, b, n in counts.iter_rows()}}


class RelabelWorker:
    """Relabels one filtered (or judged) part: a unit of `hardneg.executor`."""

    cpu_only = True

    def __init__(self, cfg: RelabelConfig, judged: bool):
        self.cfg = cfg
        self.schema = schemas.JUDGED if judged else schemas.FILTERED

    def __call__(self, part: Path) -> tuple[pa.Table, dict]:
        table = relabel_table(read_part(part, self.schema), self.cfg)
        return table, part_stats(table)


def run(filtered_dir: Path, out: Path, cfg: RelabelConfig, overwrite: bool = False,
        execution: Execution = LOCAL) -> dict:
    stage = require_finished(filtered_dir, ("filter", "judge"))["stage"]
    if cfg.policy in JUDGE_POLICIES and stage != "judge":
        raise HardnegError(f"{filtered_dir}: policy {cfg.policy} acts on an LLM judge's verdicts, and this is a "
                           f"{stage} output; run `hardneg judge {filtered_dir} --data DATA --out JUDGED` and relabel "
                           f"JUDGED")
    units = [(p.name, p.absolute()) for p in finished_parts(filtered_dir, stage)]
    with StageWriter(out, "relabel", asdict(cfg), inputs=[filtered_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        spec = {"cfg": cfg, "judged": stage == "judge"}
        run_units(units, RelabelWorker, spec, w.out, save_table, execution, w.has, "relabel: parts", w.record)
        names = [name for name, _ in units]
        if not w.claim_finish(names):
            return w.shard_pending()
        labels = w.unit_totals(names, lambda path: part_stats(read_part(path, schemas.RELABELED))).get("labels", {})
        return w.finish(summary={"policy": "drop" if not cfg.promote else cfg.policy,
                                 "labels": dict(sorted(labels.items()))})
