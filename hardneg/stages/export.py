"""`export`: join texts back and write a training file.

Formats (columns), each as Parquet or JSONL by the output's extension, loadable with `datasets`:

* `triplets`      anchor, positive, negative           one row per (positive, kept negative) pair, see pairing
* `n-tuple`       anchor, positive, negative_1..n      n = the most kept negatives any query has; queries with
                                                       fewer are left out and counted
* `labeled`       query, document, label               label 1 for positives, 0 for negatives: what
                                                       CrossEncoderTrainer + BinaryCrossEntropyLoss take as is
                                                       (with `scores`: score, the teacher's, instead of label)
* `labeled-list`  query, documents, labels             one row per query, positives first (LambdaLoss, ListNet);
                                                       with `scores`: scores instead of labels
* `flagembedding` query, pos, neg, pos_scores, neg_scores, prompt, type   (FlagEmbedding JSONL)
* `margin-mse`    query, positive, negative, label     label = teacher score of the positive minus the negative's
                                                       (sentence-transformers MarginMSELoss)

`scores` (ST's `output_scores=True`) adds `scores` = [positive's, negative's ...] to triplets and n-tuples and
replaces labels by teacher scores in the labeled formats. `with_ids` appends id columns (query_id, positive_id,
negative_id, negative_<i>_id, document_id, document_ids, pos_ids, neg_ids): for joining back, not for training (a
trainer would take them as inputs).

Pairing (triplets, n-tuple, margin-mse): `labeled` (default) pairs every kept negative with exactly one of the
query's labeled (qrels) positives, round-robin in rank order, so a query contributes as many rows as it has
negatives (n-tuple: one row, with its first labeled positive) and a promoted positive never multiplies rows; `all`
pairs every positive, promoted ones included, with every negative (n-tuple: one row per positive), as
sentence-transformers does for a query with several positives. `max_rows_per_query` caps the rows of each query
(0 = no cap). Promoted positives still appear in `labeled`, `labeled-list` and `flagembedding` (one entry each).

Positives are the rows labeled `positive` (qrels and promoted), negatives the rows labeled `negative`, both in
retriever-rank order; `flagged` and `dropped` rows are in neither.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import __version__, schemas
from hardneg.config import ExportConfig, asdict
from hardneg.errors import HardnegError
from hardneg.io import data
from hardneg.io.stagedir import (atomic_file, atomic_write_bytes, check_not_input, content_digest, dataset_digest,
                                 file_sha256, read_manifest, read_stage, require_finished, write_parquet)

PAIRED_FORMATS = ("triplets", "n-tuple", "margin-mse")


def grouped(relabeled: pa.Table, tables: dict[str, pa.Table], max_positives: int) -> pl.DataFrame:
    """One row per query: its text, positives (texts, ids, scores, source: qrels / promoted), labeled (qrels)
    positives and negatives, in rank order (labeled positives first)."""
    c = tables["corpus"]
    docs = pl.DataFrame({"doc_id": c["doc_id"].to_pylist(), "doc_text": data.document_texts(c)})
    queries = pl.from_arrow(tables["queries"]).rename({"text": "query"})
    df = (
        pl.from_arrow(relabeled)
        .with_row_index("_row")
        .filter(pl.col("label") != "dropped")
        .join(docs, on="doc_id", how="left")
        .with_columns(pl.when(pl.col("label_source") == "qrels").then(pl.lit("qrels")).otherwise(pl.lit("promoted"))
                      .alias("_src"))
        .sort(["query_id", pl.col("label_source") != "qrels", pl.col("rank").fill_null(2**31 - 1), "_row"])
    )
    pos = pl.col("label") == "positive"
    neg = pl.col("label") == "negative"
    g = df.group_by("query_id", maintain_order=True).agg(
        pl.col("doc_text").filter(pos).alias("pos"),
        pl.col("doc_id").filter(pos).alias("pos_ids"),
        pl.col("teacher_score").filter(pos).alias("pos_scores"),
        pl.col("_src").filter(pos).alias("pos_src"),
        pl.col("doc_text").filter(neg).alias("neg"),
        pl.col("doc_id").filter(neg).alias("neg_ids"),
        pl.col("teacher_score").filter(neg).alias("neg_scores"),
    )
    if max_positives > 0:
        g = g.with_columns(pl.col(c).list.head(max_positives) for c in ("pos", "pos_ids", "pos_scores", "pos_src"))
    return g.join(queries, on="query_id", how="left")


def _labeled_index() -> pl.Expr:
    """Per row of an exploded (query, negative) table: the index into `pos` of its round-robin labeled positive."""
    return pl.col("_lab").list.get(pl.col("_i") % pl.col("_lab").list.len())


def pair_rows(has_neg: pl.DataFrame, pairing: str, tuple_rows: bool) -> pl.DataFrame:
    """Pure: one row per (positive, negative) (`tuple_rows`: per positive, negatives kept as lists), with the columns
    query_id, query, positive, positive_id, positive_score, positive_source and neg / neg_ids / neg_scores."""
    x = has_neg.with_columns(
        # indices of the labeled (qrels) positives; a query without one (max_positives cut, never by mine) uses all
        pl.col("pos_src").list.eval(pl.int_range(pl.len()).filter(pl.element() == "qrels")).alias("_lab"),
    ).with_columns(
        pl.when(pl.col("_lab").list.len() > 0).then(pl.col("_lab"))
        .otherwise(pl.int_ranges(0, pl.col("pos").list.len())).alias("_lab"),
    )
    pos_cols = {"pos": "positive", "pos_ids": "positive_id", "pos_scores": "positive_score",
                "pos_src": "positive_source"}
    if tuple_rows:
        if pairing == "labeled":
            x = x.with_columns(pl.col("_lab").list.head(1).alias("_pick"))
        else:
            x = x.with_columns(pl.int_ranges(0, pl.col("pos").list.len()).alias("_pick"))
        x = x.explode("_pick")
        return x.with_columns(pl.col(k).list.get(pl.col("_pick")).alias(v) for k, v in pos_cols.items())
    if pairing == "labeled":
        x = x.with_columns(pl.int_ranges(0, pl.col("neg").list.len()).alias("_i"))
        x = x.explode(["neg", "neg_ids", "neg_scores", "_i"]).with_columns(_labeled_index().alias("_pick"))
        return x.with_columns(pl.col(k).list.get(pl.col("_pick")).alias(v) for k, v in pos_cols.items())
    x = x.with_columns(pl.int_ranges(0, pl.col("pos").list.len()).alias("_pick")).explode("_pick")
    x = x.with_columns(pl.col(k).list.get(pl.col("_pick")).alias(v) for k, v in pos_cols.items())
    return x.explode(["neg", "neg_ids", "neg_scores"])


def _cap(rows: pl.DataFrame, n: int) -> pl.DataFrame:
    return rows.filter(pl.int_range(pl.len()).over("query_id") < n) if n > 0 else rows


def _f64(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Float64)


def to_format(g: pl.DataFrame, cfg: ExportConfig) -> tuple[pl.DataFrame, dict]:
    """Pure: grouped queries -> the rows of the training file, and counts of what was left out and of the rows by
    their positive's source (qrels / promoted)."""
    has_neg = g.filter(pl.col("neg").list.len() > 0)
    counts = {"queries": g.height, "queries_without_negatives": g.height - has_neg.height}
    ids = cfg.with_ids
    fmt = cfg.format
    if fmt in PAIRED_FORMATS:
        if fmt == "n-tuple":
            n = int(has_neg["neg"].list.len().max() or 0)
            full = has_neg.filter(pl.col("neg").list.len() == n)
            counts["queries_with_fewer_negatives"] = has_neg.height - full.height
            counts["negatives_per_row"] = n
            p = _cap(pair_rows(full, cfg.pairing, tuple_rows=True), cfg.max_rows_per_query)
            cols = [pl.col("query").alias("anchor"), "positive",
                    *[pl.col("neg").list.get(i).alias(f"negative_{i + 1}") for i in range(n)]]
            if cfg.scores:
                cols.append(pl.concat_list(_f64("positive_score"), pl.col("neg_scores").list.eval(
                    pl.element().cast(pl.Float64))).alias("scores"))
            if ids:
                cols += ["query_id", "positive_id", *[pl.col("neg_ids").list.get(i).alias(f"negative_{i + 1}_id")
                                                      for i in range(n)]]
        else:
            p = _cap(pair_rows(has_neg, cfg.pairing, tuple_rows=False), cfg.max_rows_per_query)
            if fmt == "triplets":
                cols = [pl.col("query").alias("anchor"), "positive", pl.col("neg").alias("negative")]
                if cfg.scores:
                    cols.append(pl.concat_list(_f64("positive_score"), _f64("neg_scores")).alias("scores"))
            else:  # margin-mse
                cols = ["query", "positive", pl.col("neg").alias("negative"),
                        (_f64("positive_score") - _f64("neg_scores")).alias("label")]
            if ids:
                cols += ["query_id", "positive_id", pl.col("neg_ids").alias("negative_id")]
        rows = p.select(cols)
        sources = p["positive_source"]
        per_query = p.group_by("query_id").len()["len"]
    elif fmt == "labeled":
        positives = g.select("query_id", "query", pl.col("pos").alias("document"), pl.col("pos_ids").alias("did"),
                             pl.col("pos_scores").alias("score"), pl.col("pos_src").alias("src")
                             ).explode(["document", "did", "score", "src"])
        negatives = g.select("query_id", "query", pl.col("neg").alias("document"), pl.col("neg_ids").alias("did"),
                             pl.col("neg_scores").alias("score"), pl.lit(None, pl.String).alias("src")
                             ).explode(["document", "did", "score"])
        both = pl.concat([positives.with_columns(label=pl.lit(1)), negatives.with_columns(label=pl.lit(0))]
                         ).drop_nulls("document")
        cols = ["query", "document", _f64("score") if cfg.scores else pl.col("label").cast(pl.Int64)]
        if ids:
            cols += ["query_id", pl.col("did").alias("document_id")]
        rows = both.select(cols)
        sources = both["src"].drop_nulls()
        per_query = both.group_by("query_id").len()["len"]
    elif fmt == "labeled-list":
        cols = ["query", pl.concat_list("pos", "neg").alias("documents")]
        if cfg.scores:
            cols.append(pl.concat_list(pl.col("pos_scores").list.eval(pl.element().cast(pl.Float64)),
                                       pl.col("neg_scores").list.eval(pl.element().cast(pl.Float64))).alias("scores"))
        else:
            cols.append(pl.concat_list(pl.col("pos").list.eval(pl.lit(1, pl.Int64)),
                                       pl.col("neg").list.eval(pl.lit(0, pl.Int64))).alias("labels"))
        if ids:
            cols += ["query_id", pl.concat_list("pos_ids", "neg_ids").alias("document_ids")]
        rows = has_neg.select(cols)
        sources = has_neg["pos_src"].explode().drop_nulls()
        per_query = pl.Series([1] * has_neg.height)
    elif fmt == "flagembedding":
        cols = ["query", "pos", "neg",
                pl.col("pos_scores").list.eval(pl.element().cast(pl.Float64)),
                pl.col("neg_scores").list.eval(pl.element().cast(pl.Float64)),
                pl.lit(cfg.prompt).alias("prompt"), pl.lit("normal").alias("type")]
        if ids:
            cols += ["query_id", "pos_ids", "neg_ids"]
        rows = has_neg.select(cols)
        sources = has_neg["pos_src"].explode().drop_nulls()
        per_query = pl.Series([1] * has_neg.height)
    else:
        raise HardnegError(f"unknown export format {cfg.format!r}")
    counts["rows"] = rows.height
    counts["rows_max_per_query"] = int(per_query.max() or 0) if len(per_query) else 0
    by_source = {s: int((sources == s).sum()) for s in ("qrels", "promoted")}
    # paired formats count rows; the others count positive entries in the file
    counts["rows_by_positive_source" if fmt in PAIRED_FORMATS else "positives_by_source"] = by_source
    return rows, counts


def write_rows(rows: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith(".parquet"):
        write_parquet(out, rows.to_arrow())
    else:
        with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for rec in rows.iter_rows(named=True):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def dataset_dir(out: Path) -> Path:
    """Where `save_to_disk = true` writes the `datasets` folder: beside the file, named after it (train.dataset)."""
    name = out.name.removesuffix(".parquet").removesuffix(".jsonl")
    return out.with_name(f"{name}.dataset")


def upstream_configs(stage_dir: Path) -> dict[str, dict]:
    """The resolved config of every stage that led to `stage_dir` (following the manifests' inputs)."""
    out: dict[str, dict] = {}
    todo = [Path(stage_dir)]
    while todo:
        d = todo.pop()
        try:
            m = read_manifest(d)
        except (OSError, HardnegError, ValueError):
            continue
        out.setdefault(m.get("stage", d.name), m.get("config", {}))
        todo += [Path(i["path"]) for i in m.get("inputs", [])]
    return out


def dataset_card(cfg: ExportConfig, counts: dict, reasons: dict, stages: dict[str, dict], columns: list[str]) -> str:
    """The README.md of the `datasets` folder: how the file was made, what it holds, what was dropped and why."""
    order = ["import", "index", "mine", "score", "filter", "relabel"]
    lines = ["---", "tags:", "- hardneg", "- hard-negatives", "- sentence-transformers", "---", "",
             "# Hard-negative training set", "",
             f"Made by hardneg {__version__}: format `{cfg.format}`"
             + (f", pairing `{cfg.pairing}`" if cfg.format in PAIRED_FORMATS else "")
             + f". Columns: {', '.join(f'`{c}`' for c in columns)}.", "",
             "```python", "import datasets", "ds = datasets.load_from_disk(\"<this folder>\")", "```", "",
             "## Counts", "", "| what | n |", "|---|---:|"]
    for k, v in counts.items():
        if isinstance(v, dict):
            lines += [f"| {k.replace('_', ' ')}: {s} | {n} |" for s, n in v.items()]
        else:
            lines.append(f"| {k.replace('_', ' ')} | {v} |")
    lines += ["", "## Candidates dropped, by reason", "", "| reason | candidates |", "|---|---:|"]
    lines += [f"| {r} | {n} |" for r, n in reasons.items()] or ["| (none) | 0 |"]
    lines += ["", "## Configuration", ""]
    for stage in order + ["export"]:
        conf = asdict(cfg) if stage == "export" else stages.get(stage)
        if conf:
            lines += [f"### {stage}", "", "```json", json.dumps(conf, indent=2, sort_keys=True, default=str), "```",
                      ""]
    return "\n".join(lines)


def write_dataset(rows: pl.DataFrame, target: Path, card: str) -> None:
    """`datasets.Dataset.save_to_disk` into `target` (through a temporary folder), with README.md beside."""
    import datasets

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset(datasets.table.InMemoryTable(rows.to_arrow())).save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


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
    if cfg.save_to_disk and dataset_dir(out).exists() and not overwrite:
        raise HardnegError(f"{dataset_dir(out)}: already exists; pass --overwrite to replace it")
    relabeled = read_stage(relabeled_dir, "relabel", schemas.RELABELED)
    g = grouped(relabeled, tables, cfg.max_positives_per_query)
    rows, counts = to_format(g, cfg)
    try:
        write_rows(rows, out)
        if cfg.save_to_disk:
            rel = pl.from_arrow(relabeled.select(["is_positive", "reason"])).filter(~pl.col("is_positive"))
            reasons = {r: int(n) for r, n in rel["reason"].drop_nulls().value_counts(sort=True).iter_rows()}
            card = dataset_card(cfg, counts, reasons, upstream_configs(relabeled_dir), rows.columns)
            write_dataset(rows, dataset_dir(out), card)
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
    if cfg.save_to_disk:
        manifest["dataset_dir"] = str(dataset_dir(out))
    atomic_write_bytes(Path(f"{out}.manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
