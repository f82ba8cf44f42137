"""`export`: join texts back and write a training file.

Formats (columns), each as Parquet or JSONL by the output's extension, loadable with `datasets`:

* `triplets`      anchor, positive, negative           one row per (query, positive, kept negative)
* `n-tuple`       anchor, positive, negative_1..n      n = the most kept negatives any query has; queries with
                                                       fewer are left out and counted
* `labeled`       query, document, label, score        label 1 for positives, 0 for negatives (distillation)
* `flagembedding` query, pos, neg, pos_scores, neg_scores, prompt, type   (FlagEmbedding JSONL)
* `margin-mse`    query, positive, negative, label     label = teacher score of the positive minus the negative's
                                                       (sentence-transformers MarginMSELoss)

Positives are the rows labeled `positive` (qrels and promoted), negatives the rows labeled `negative`, both in
retriever-rank order; `flagged` and `dropped` rows are in neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import ExportConfig, asdict
from hardneg.errors import HardnegError
from hardneg.io import data
from hardneg.io.stagedir import (atomic_write_bytes, check_not_input, content_digest, dataset_digest, file_sha256,
                                 read_stage, require_finished, write_parquet)


def grouped(relabeled: pa.Table, tables: dict[str, pa.Table], max_positives: int) -> pl.DataFrame:
    """One row per query: its text, positives and negatives (texts and scores), in rank order."""
    c = tables["corpus"]
    docs = pl.DataFrame({"doc_id": c["doc_id"].to_pylist(), "doc_text": data.document_texts(c)})
    queries = pl.from_arrow(tables["queries"]).rename({"text": "query"})
    df = (
        pl.from_arrow(relabeled)
        .with_row_index("_row")
        .filter(pl.col("label") != "dropped")
        .join(docs, on="doc_id", how="left")
        .sort(["query_id", pl.col("label_source") != "qrels", pl.col("rank").fill_null(2**31 - 1), "_row"])
    )
    pos = pl.col("label") == "positive"
    neg = pl.col("label") == "negative"
    g = df.group_by("query_id", maintain_order=True).agg(
        pl.col("doc_text").filter(pos).alias("pos"),
        pl.col("teacher_score").filter(pos).alias("pos_scores"),
        pl.col("doc_text").filter(neg).alias("neg"),
        pl.col("teacher_score").filter(neg).alias("neg_scores"),
    )
    if max_positives > 0:
        g = g.with_columns(pl.col("pos").list.head(max_positives), pl.col("pos_scores").list.head(max_positives))
    return g.join(queries, on="query_id", how="left")


def to_format(g: pl.DataFrame, cfg: ExportConfig) -> tuple[pl.DataFrame, dict]:
    """Pure: grouped queries -> the rows of the training file, and counts of what was left out."""
    has_neg = g.filter(pl.col("neg").list.len() > 0)
    counts = {"queries": g.height, "queries_without_negatives": g.height - has_neg.height}
    if cfg.format == "triplets":
        rows = (
            has_neg.select(pl.col("query").alias("anchor"), pl.col("pos").alias("positive"), pl.col("neg").alias("negative"))
            .explode("positive").explode("negative")
        )
    elif cfg.format == "n-tuple":
        n = int(has_neg["neg"].list.len().max() or 0)
        full = has_neg.filter(pl.col("neg").list.len() == n)
        counts["queries_with_fewer_negatives"] = has_neg.height - full.height
        counts["negatives_per_row"] = n
        rows = full.select(
            pl.col("query").alias("anchor"), pl.col("pos").alias("positive"),
            *[pl.col("neg").list.get(i).alias(f"negative_{i + 1}") for i in range(n)],
        ).explode("positive")
    elif cfg.format == "labeled":
        positives = g.select(pl.col("query"), pl.col("pos").alias("document"), pl.col("pos_scores").alias("score"),
                             pl.lit(1.0).alias("label")).explode(["document", "score"])
        negatives = g.select(pl.col("query"), pl.col("neg").alias("document"), pl.col("neg_scores").alias("score"),
                             pl.lit(0.0).alias("label")).explode(["document", "score"])
        rows = pl.concat([positives, negatives]).drop_nulls("document").select("query", "document", "label", "score")
    elif cfg.format == "flagembedding":
        rows = has_neg.select(
            "query", "pos", "neg",
            pl.col("pos_scores").list.eval(pl.element().cast(pl.Float64)),
            pl.col("neg_scores").list.eval(pl.element().cast(pl.Float64)),
            pl.lit(cfg.prompt).alias("prompt"), pl.lit("normal").alias("type"),
        )
    elif cfg.format == "margin-mse":
        rows = (
            has_neg.select("query", pl.col("pos").alias("positive"), "pos_scores", pl.col("neg").alias("negative"),
                           "neg_scores")
            .explode(["positive", "pos_scores"]).explode(["negative", "neg_scores"])
            .select("query", "positive", "negative",
                    (pl.col("pos_scores").cast(pl.Float64) - pl.col("neg_scores").cast(pl.Float64)).alias("label"))
        )
    else:
        raise HardnegError(f"unknown export format {cfg.format!r}")
    counts["rows"] = rows.height
    return rows, counts


def write_rows(rows: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith(".parquet"):
        write_parquet(out, rows.to_arrow())
    else:
        tmp = out.with_name(f".{out.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in rows.iter_rows(named=True):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, out)


def run(relabeled_dir: Path, data_dir: Path, out: Path, cfg: ExportConfig, overwrite: bool = False) -> dict:
    out = Path(out)
    if not out.name.endswith((".parquet", ".jsonl")):
        raise HardnegError(f"{out}: the training file must end in .parquet or .jsonl")
    if out.exists() and not overwrite:
        if not Path(f"{out}.manifest.json").exists():
            raise HardnegError(f"{out}: exists without its manifest (an interrupted export?); pass --overwrite to "
                               f"replace it")
        raise HardnegError(f"{out}: already exists; pass --overwrite to replace it")
    check_not_input(out, [relabeled_dir, data_dir])
    tables = data.load(data_dir)
    upstream = require_finished(relabeled_dir, "relabel").get("dataset")
    if upstream is not None and upstream != dataset_digest(data_dir):
        raise HardnegError(f"{data_dir}: is not the dataset {relabeled_dir} was mined from (their contents differ); "
                           f"pass the same --data that `mine` used")
    relabeled = read_stage(relabeled_dir, "relabel", schemas.RELABELED)
    g = grouped(relabeled, tables, cfg.max_positives_per_query)
    rows, counts = to_format(g, cfg)
    try:
        write_rows(rows, out)
    except OSError as exc:
        raise HardnegError(f"{out}: cannot write the training file ({exc.strerror}); choose another --out") from None
    manifest = {
        "stage": "export",
        "config": asdict(cfg),
        "inputs": [{"path": str(p), "stage": s, "digest": content_digest(p)}
                   for p, s in ((relabeled_dir, "relabel"), (data_dir, "import"))],
        **({"dataset": upstream} if upstream else {}),
        "file": {"bytes": out.stat().st_size, "sha256": file_sha256(out)},
        "summary": counts,
        "columns": rows.columns,
    }
    atomic_write_bytes(Path(f"{out}.manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
