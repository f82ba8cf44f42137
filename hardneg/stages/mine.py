"""`mine`: retrieve the top-k candidates of every query, in query batches, and mark its labeled positives.

Every labeled positive of a query appears as a row with `is_positive = true`, also when the retriever missed it
(`rank` null, `retriever` "qrels", `retriever_score` the score the retriever gives it), so no labeled positive can
ever be taken for a negative downstream. Queries without any positive are skipped and counted. All rows of a query
are in the same part.

Candidate selection: only ranks in (range_min, range_max] are kept; `sample` of them per query by `top`, `random`
or `simans` (around the retriever score of the query's best positive). A candidate whose normalized text
(`hardneg.io.data.normalize_text`, as the filter's near-duplicate rule) equals one of the query's positives is flagged
`same_text_as_positive`; flagged candidates in the window are kept and do not count towards `sample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hardneg import sampling, schemas
from hardneg.config import IndexConfig, MineConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io import data
from hardneg.io.stagedir import StageWriter, dataset_digest, read_part, require_finished, save_table
from hardneg.registry import RETRIEVERS, lookup, uses_dense


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
    missed_scores: dict[tuple[str, str], float] | None = None,
    same_text: set[tuple[str, str]] | None = None,
) -> pa.Table:
    """Pure: one batch of retrieval results -> rows of the `mined` schema (retrieved first, then missed positives).

    `doc_ids[j]` is the id of `doc_index` value j; `missed_scores` the retriever scores of positives it did not
    return, `same_text` the (query, doc) pairs whose document has the same normalized text as a positive."""
    missed_scores = missed_scores or {}
    same_text = same_text or set()
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
            cols["same_text_as_positive"].append(did not in pos and (qid, did) in same_text)
        for did in positives[qid]:
            if did not in seen:
                cols["query_id"].append(qid)
                cols["doc_id"].append(did)
                cols["rank"].append(None)
                cols["retriever"].append("qrels")
                cols["retriever_score"].append(missed_scores.get((qid, did)))
                cols["is_positive"].append(True)
                cols["same_text_as_positive"].append(False)
    return pa.table(cols, schema=schemas.MINED)


def select_candidates(table: pa.Table, cfg: MineConfig) -> pa.Table:
    """Pure: keep the positives, and the candidates in the rank window chosen by `cfg.sample`/`cfg.sampling`
    (flagged same-text candidates in the window are kept without counting). Independent of batching."""
    depth = cfg.range_max or cfg.top_k
    if cfg.range_min == 0 and cfg.sample == 0 and depth == cfg.top_k:
        return table
    df = pl.from_arrow(table)
    rank = pl.col("rank")
    in_window = rank.is_not_null() & (rank > cfg.range_min) & (rank <= depth) & ~pl.col("is_positive")
    eligible = in_window & ~pl.col("same_text_as_positive")
    df = df.with_columns(
        pl.col("retriever_score").filter(pl.col("is_positive")).max().over("query_id").alias("_pos")
    )
    chosen = sampling.select(df, eligible, cfg.sample, cfg.sampling, seed=cfg.seed, score="retriever_score",
                             pos="_pos", a=cfg.simans_a, b=cfg.simans_b)
    keep = df.select((pl.col("is_positive") | (in_window & pl.col("same_text_as_positive"))).alias("k"))["k"] | chosen
    return table.filter(pa.array(keep.fill_null(False).to_arrow()))


class MineWorker:
    """Retrieves and selects one query batch (a unit of `hardneg.executor`): built once per process from paths."""

    def __init__(self, index_dir: Path, data_dir: Path, cfg: MineConfig, index_cfg: IndexConfig):
        tables = data.load(data_dir, ("queries", "qrels"))
        self.cfg, self.index_cfg = cfg, index_cfg
        self.positives = positives_by_query(tables["qrels"], cfg.min_relevance)
        queries = tables["queries"]
        self.qtext = dict(zip(queries["query_id"].to_pylist(), queries["text"].to_pylist()))
        ids_path = Path(index_dir) / "doc_ids.parquet"
        ids = pq.read_table(ids_path)
        if "text_key" not in ids.column_names:
            raise HardnegError(f"{ids_path}: no text_key column (an index from an older hardneg); rebuild it with "
                               f"`hardneg index ... --overwrite`")
        self.doc_ids = ids["doc_id"].combine_chunks()
        self.text_key = ids["text_key"].to_numpy()
        pos_ids = sorted({d for docs in self.positives.values() for d in docs})
        self.pos_row = dict(zip(pos_ids, pc.index_in(pa.array(pos_ids, pa.string()),
                                                     value_set=self.doc_ids).to_pylist()))
        self.retriever = lookup(RETRIEVERS, index_cfg.retriever, "retriever")(index_dir, index_cfg)
        if hasattr(self.retriever, "fuse_with"):
            self.retriever.fuse_with(cfg)

    def __call__(self, batch: list[str]) -> tuple[pa.Table, dict]:
        texts = [self.qtext[q] for q in batch]
        idx, scores, sources = self.retriever.search(texts, self.cfg.range_max or self.cfg.top_k)
        table = batch_rows(self.retriever, batch, texts, idx, scores, sources, self.doc_ids, self.text_key,
                           self.positives, self.pos_row, self.index_cfg.retriever)
        table = select_candidates(table, self.cfg)
        return table, part_stats(table)


def part_stats(mined: pa.Table) -> dict:
    """The statistics of one mined part that the manifest's summary adds up."""
    positive = mined["is_positive"]
    missed = pc.and_(positive, pc.is_null(mined["rank"]))
    return {"positives_not_retrieved": pc.sum(missed).as_py() or 0,
            "candidates": mined.num_rows - (pc.sum(positive).as_py() or 0),
            "candidates_same_text_as_positive": pc.sum(mined["same_text_as_positive"]).as_py() or 0}


def run(index_dir: Path, data_dir: Path, out: Path, cfg: MineConfig, overwrite: bool = False,
        execution: Execution = LOCAL) -> dict:
    index_manifest = require_finished(index_dir, "index")
    tables = data.load(data_dir, ("queries", "qrels"))  # the workers load the corpus
    if index_manifest.get("dataset", dataset_digest(data_dir)) != dataset_digest(data_dir):
        raise HardnegError(
            f"{data_dir}: is not the dataset {index_dir} was built from (built from "
            f"{index_manifest['inputs'][0]['path']}, whose content differs); pass the same --data, or rebuild the index"
        )
    index_cfg = IndexConfig(**index_manifest["config"])
    if cfg.device:
        index_cfg.device = cfg.device
    positives = positives_by_query(tables["qrels"], cfg.min_relevance)
    if not positives:
        top = pc.max(tables["qrels"]["relevance"]).as_py()
        raise HardnegError(f"--min-relevance {cfg.min_relevance}: no qrels row of {data_dir} has a relevance that "
                           f"high (the highest is {top}), so no query has a positive; pass --min-relevance {top} or "
                           f"lower")
    qids_all = tables["queries"]["query_id"].to_pylist()
    del tables
    qids = [q for q in qids_all if q in positives]
    depth = cfg.range_max or cfg.top_k
    units = [(f"part-{n:05d}.parquet", qids[i : i + cfg.query_batch_size])
             for n, i in enumerate(range(0, len(qids), cfg.query_batch_size))]

    with StageWriter(out, "mine", asdict(cfg), inputs=[index_dir, data_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        spec = {"index_dir": Path(index_dir).absolute(), "data_dir": Path(data_dir).absolute(), "cfg": cfg,
                "index_cfg": index_cfg}
        run_units(units, MineWorker, spec, w.out, save_table, execution, w.has, "mine: query batches", w.record)
        names = [name for name, _ in units]
        if not w.claim_finish(names):
            return w.shard_pending()
        n_pos = sum(len(positives[q]) for q in qids)
        counts = w.unit_totals(names, lambda path: part_stats(read_part(path, schemas.MINED)))
        summary = {
            "queries": len(qids),
            "queries_without_positive_skipped": len(qids_all) - len(qids),
            "positives": n_pos,
            "positives_not_retrieved": counts.get("positives_not_retrieved", 0),
            "candidates": counts.get("candidates", 0),
            "candidates_same_text_as_positive": counts.get("candidates_same_text_as_positive", 0),
            "retriever": index_cfg.retriever,
            "top_k": cfg.top_k,
            "depth": depth,
            "rank_window": [cfg.range_min + 1, depth],
            "sample": cfg.sample,
            "sampling": cfg.sampling if cfg.sample else None,
        }
        if index_cfg.retriever == "hybrid":
            summary["fusion"] = cfg.fusion
        models = {"embedding": index_cfg.model} if uses_dense(index_cfg.retriever) else {}
        return w.finish(summary=summary, models=models)


def batch_rows(retriever, batch, texts, idx, scores, sources, doc_ids: pa.Array, text_key: np.ndarray, positives,
               pos_row, retriever_name) -> pa.Table:
    """One batch of retrieval results -> mined rows, with missed positives scored and same-text candidates flagged."""
    missed_rows = []
    for i, qid in enumerate(batch):
        got = set(idx[i][idx[i] >= 0].tolist())
        missed_rows.append([pos_row[d] for d in positives[qid] if pos_row[d] not in got])
    missed_scores = {}
    if hasattr(retriever, "score_docs") and any(missed_rows):
        for qid, rows, s in zip(batch, missed_rows, retriever.score_docs(texts, missed_rows)):
            missed_scores.update({(qid, doc_ids[r].as_py()): float(v) for r, v in zip(rows, s)})
    # candidates whose normalized text (its key, by corpus row) is a positive's
    rows = np.unique(idx[idx >= 0])
    local_ids = {int(r): doc_ids[int(r)].as_py() for r in rows}
    same_text = set()
    for i, qid in enumerate(batch):
        pos_keys = {int(text_key[pos_row[d]]) for d in positives[qid]}
        for d in idx[i][idx[i] >= 0].tolist():
            if int(text_key[d]) in pos_keys:
                same_text.add((qid, local_ids[d]))
    return mined_rows(batch, idx, scores, sources, local_ids, positives, retriever_name, missed_scores, same_text)
