"""The data contracts of every table hardneg reads or writes, and one validator for all of them.

Ids are strings everywhere; text lives only in the data tables (corpus, queries) and is joined back at export.
"""

from __future__ import annotations

import pyarrow as pa

from hardneg.errors import HardnegError

CORPUS = pa.schema([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
QUERIES = pa.schema([("query_id", pa.string()), ("text", pa.string())])
QRELS = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("relevance", pa.int32())])

MINED = pa.schema(
    [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("rank", pa.int32()),  # 1-based retriever rank; null for a labeled positive the retriever missed
        ("retriever", pa.string()),  # bm25 / rank-bm25 / dense / hybrid / qrels (positive not retrieved)
        ("retriever_score", pa.float32()),
        ("is_positive", pa.bool_()),
        ("same_text_as_positive", pa.bool_()),  # normalized text equals one of the query's positives'
    ]
)
SCORED = MINED.append(pa.field("teacher_score", pa.float32()))
FILTERED = SCORED.append(pa.field("keep", pa.bool_())).append(pa.field("reason", pa.string()))
RELABELED = FILTERED.append(pa.field("label", pa.string())).append(pa.field("label_source", pa.string()))

# judged = filtered + the LLM judges' verdicts on the suspects (hardneg.stages.judge); null on other rows
VERDICT = pa.struct([("judge", pa.string()), ("prompt_hash", pa.string()), ("score", pa.float32()),
                     ("flagged", pa.bool_())])
JUDGED = (FILTERED.append(pa.field("suspect", pa.bool_()))
          .append(pa.field("judge_relevant", pa.bool_()))  # the deciding judge's verdict (null: not judged)
          .append(pa.field("judge_score", pa.float32()))  # its P(yes); null also when its answer was unparsable
          .append(pa.field("judge", pa.string()))  # its identity label (backend:model)
          .append(pa.field("judge_level", pa.int32()))  # its place in the cascade, 1-based
          .append(pa.field("prompt_hash", pa.string()))
          .append(pa.field("verdicts", pa.list_(VERDICT))))  # every judge's verdict on the row, in cascade order

STAGE_SCHEMAS = {"mine": MINED, "score": SCORED, "filter": FILTERED, "judge": JUDGED, "relabel": RELABELED}

# reasons a filter may give for dropping a candidate (null when kept) besides its rules' (hardneg.rules)
OTHER_DROP_REASONS = (
    "not_sampled",  # beyond negatives_per_query
    "too_few_negatives",  # short_policy = drop: the query has fewer than negatives_per_query negatives
    "not_scored",  # score's adaptive depth stopped before this candidate's rank (hardneg.stages.score)
)


def drop_reasons() -> tuple[str, ...]:
    """Every reason a filter may give for dropping a candidate: each registered rule's, then the others."""
    from hardneg import rules

    return rules.reasons() + OTHER_DROP_REASONS


def __getattr__(name: str):
    if name == "DROP_REASONS":  # computed on each use, so a rule registered at run time is in it
        return drop_reasons()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LABELS = ("positive", "negative", "dropped", "flagged")  # flagged: suspected false negative kept for a judge
LABEL_SOURCES = ("qrels", "teacher", "rule", "llm")  # llm: decided by an LLM judge (hardneg judge)


def conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Return `table` with exactly `schema`'s columns, in order, cast to its types.

    Raises HardnegError naming `source` and the first missing column or the first value that cannot be cast.
    Extra columns are dropped.
    """
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise HardnegError(
            f"{source}: missing column {missing[0]!r} (has {', '.join(table.column_names) or 'no columns'}); "
            f"expected columns {', '.join(schema.names)}"
        )
    columns = []
    for field in schema:
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise HardnegError(
                    f"{source}: column {field.name!r} has type {column.type}, expected {field.type} ({exc})"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
