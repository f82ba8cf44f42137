"""`index`: build a sparse, dense or hybrid index of the corpus.

The corpus encoding (dense, hybrid) runs in chunks through `hardneg.executor` (locally, on Ray, or one shard of the
chunks); the shard that finishes the stage assembles the embeddings and builds the BM25 and faiss indexes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from hardneg.config import IndexConfig, asdict
from hardneg.executor import LOCAL, Execution
from hardneg.io import data
from hardneg.io.stagedir import StageWriter, save_table
from hardneg.registry import RETRIEVERS, lookup, uses_dense
from hardneg.retrievers import dense


def run(data_dir: Path, out: Path, cfg: IndexConfig, overwrite: bool = False, execution: Execution = LOCAL) -> dict:
    dense_kind = uses_dense(cfg.retriever)
    tables = data.load(data_dir, ("corpus", "queries", "qrels") if dense_kind else ("corpus",))
    corpus = tables["corpus"]
    cls = lookup(RETRIEVERS, cfg.retriever, "retriever")
    with StageWriter(out, "index", asdict(cfg), inputs=[data_dir], overwrite=overwrite, shard=execution.shard) as w:
        texts = data.document_texts(corpus)
        expected = []
        if dense_kind:
            # the queries `mine` will search with (it must use this dataset) are encoded here once, as one more unit
            queries = tables["queries"].filter(pc.is_in(tables["queries"]["query_id"],
                                                        value_set=pc.unique(tables["qrels"]["query_id"])))
            queries = list(dict.fromkeys(queries["text"].to_pylist()))
            dense.encode_units(w.out, texts, cfg, execution, queries)
            expected = [dense.QUERIES]
            if not dense.has_embeddings(w.out):
                expected += [name for name, _ in dense.chunk_units(texts, cfg)]
        if not w.claim_finish(expected):
            return w.shard_pending()
        info = cls.build(texts, w.out, cfg) or {}
        if dense_kind:
            save_table(w.out / dense.QUERY_TEXTS, pa.table({"text": pa.array(queries, pa.string())}))
            info["queries_encoded"] = len(queries)
        w.write_table("doc_ids.parquet", pa.table({"doc_id": corpus["doc_id"], "text_key": data.text_keys(corpus)}))
        models = {"embedding": cfg.model} if dense_kind else {}
        return w.finish(summary={"documents": corpus.num_rows, "retriever": cfg.retriever, **info}, models=models)
