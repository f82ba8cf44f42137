"""`index`: build a sparse, dense or hybrid index of the corpus."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hardneg.config import IndexConfig, asdict
from hardneg.io import data
from hardneg.io.stagedir import StageWriter
from hardneg.registry import RETRIEVERS, lookup


def run(data_dir: Path, out: Path, cfg: IndexConfig, overwrite: bool = False) -> dict:
    tables = data.load(data_dir)
    cls = lookup(RETRIEVERS, cfg.retriever, "retriever")
    corpus = tables["corpus"]
    with StageWriter(out, "index", asdict(cfg), inputs=[data_dir], overwrite=overwrite) as w:
        info = cls.build(data.document_texts(corpus), w.out, cfg) or {}
        w.write_table("doc_ids.parquet", pa.table({"doc_id": corpus["doc_id"]}))
        models = {"embedding": cfg.model} if cfg.retriever in ("dense", "hybrid") else {}
        return w.finish(summary={"documents": corpus.num_rows, "retriever": cfg.retriever, **info}, models=models)
