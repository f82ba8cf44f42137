"""`mine`: retrieve the top-k candidates of every query, in query batches, and mark its labeled positives.

Every labeled positive of a query appears as a row with `is_positive = true`, also when the retriever missed it
(`rank` null, `retriever` "qrels"), so no labeled positive can ever be taken for a negative downstream.
Queries without any positive are skipped and counted. All rows of a query are in the same part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hardneg import schemas
from hardneg.config import IndexConfig, MineConfig, asdict
from hardneg.errors import HardnegError
from hardneg.io import data
from hardneg.io.stagedir import StageWriter, manifest_digest, require_finished
from hardneg.registry import RETRIEVERS, lookup


def positives_by_query(qrels: pa.Table, min_relevance: int) -> dict[str, list[str]]:
    rel = qrels.filter(pc.greater_equal(qrels["relevance"], min_relevance))
    out: dict[str, list[str]] = {}
    for q, d in zip(rel["query_id"].to_pylist(), rel["doc_id"].to_pylist()):
        docs = out.setdefault(q, [])
        if d not in docs:
            docs.append(d)
    return out


def mined_rows(
    query_ids: list[str],
    doc_index: np.ndarray,
    scores: np.ndarray,
    sources,
    doc_ids: list[str],
    positives: dict[str, list[str]],
    retriever: str,
) -> pa.Table:
    """Pure: one batch of retrieval results -> rows of the `mined` schema (retrieved first, then missed positives)."""
    cols = {name: [] for name in schemas.MINED.names}
    for i, qid in enumerate(query_ids):
        pos = set(positives[qid])
        seen = set()
        for j, d in enumerate(doc_index[i]):
            if d < 0:
                break
            did = doc_ids[d]
            seen.add(did)
            cols["query_id"].append(qid)
            cols["doc_id"].append(did)
            cols["rank"].append(j + 1)
            cols["retriever"].append(sources[i][j] if sources is not None else retriever)
            cols["retriever_score"].append(float(scores[i, j]))
            cols["is_positive"].append(did in pos)
        for did in positives[qid]:
            if did not in seen:
                cols["query_id"].append(qid)
                cols["doc_id"].append(did)
                cols["rank"].append(None)
                cols["retriever"].append("qrels")
                cols["retriever_score"].append(None)
                cols["is_positive"].append(True)
    return pa.table(cols, schema=schemas.MINED)


def run(index_dir: Path, data_dir: Path, out: Path, cfg: MineConfig, overwrite: bool = False) -> dict:
    index_manifest = require_finished(index_dir, "index")
    tables = data.load(data_dir)
    if index_manifest["inputs"][0]["manifest_sha256"] != manifest_digest(data_dir):
        raise HardnegError(
            f"{index_dir}: was built from {index_manifest['inputs'][0]['path']}, not from {data_dir}; "
            f"pass the same --data, or rebuild the index"
        )
    index_cfg = IndexConfig(**index_manifest["config"])
    positives = positives_by_query(tables["qrels"], cfg.min_relevance)
    queries = tables["queries"]
    qids_all = queries["query_id"].to_pylist()
    qtext = dict(zip(qids_all, queries["text"].to_pylist()))
    qids = [q for q in qids_all if q in positives]
    doc_ids = pq.read_table(Path(index_dir) / "doc_ids.parquet")["doc_id"].to_pylist()
    batches = [qids[i : i + cfg.query_batch_size] for i in range(0, len(qids), cfg.query_batch_size)]

    with StageWriter(out, "mine", asdict(cfg), inputs=[index_dir, data_dir], overwrite=overwrite) as w:
        todo = [(n, b) for n, b in enumerate(batches) if not w.has(f"part-{n:05d}.parquet")]
        if todo:
            retriever = lookup(RETRIEVERS, index_cfg.retriever, "retriever")(index_dir, index_cfg)
            if hasattr(retriever, "rrf_k"):
                retriever.rrf_k = cfg.rrf_k
            for n, batch in tqdm(todo, desc="mine: query batches", unit="batch", disable=len(todo) < 2):
                idx, scores, sources = retriever.search([qtext[q] for q in batch], cfg.top_k)
                table = mined_rows(batch, idx, scores, sources, doc_ids, positives, index_cfg.retriever)
                w.write_table(f"part-{n:05d}.parquet", table)
        n_pos = sum(len(positives[q]) for q in qids)
        summary = {
            "queries": len(qids),
            "queries_without_positive_skipped": len(qids_all) - len(qids),
            "positives": n_pos,
            "retriever": index_cfg.retriever,
            "top_k": cfg.top_k,
        }
        dense = index_cfg.retriever in ("dense", "hybrid")
        return w.finish(summary=summary, models={"embedding": index_cfg.model} if dense else {})
