"""`score`: a teacher scores every (query, positive) and (query, candidate) pair of the mined table.

Only distinct (query_id, doc_id) pairs are scored, and each score is kept in an on-disk cache keyed by the teacher's
identity (kind, model, prompts, lengths, dtype) and the pair, so re-running `score` after a deeper `mine` scores only
the new pairs. A cached score is reused only when the query's and the document's texts are unchanged (their hashes
are part of the key).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pyarrow as pa

from hardneg import schemas
from hardneg.config import ScoreConfig, asdict
from hardneg.io import data
from hardneg.io.data import text_hash
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io.stagedir import (StageWriter, finished_parts, part_paths, read_part, require_finished, save_table,
                                 write_parquet)
from hardneg.registry import TEACHERS, lookup
from hardneg.teachers import load_teacher

KEY = ["query_id", "doc_id", "query_hash", "doc_hash"]
CACHE_SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("query_hash", pa.uint64()),
                          ("doc_hash", pa.uint64()), ("teacher_score", pa.float32())])


def teacher_identity(cfg: ScoreConfig) -> dict:
    """What makes two teachers give the same scores (not batch size or device)."""
    model = cfg.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    return {"teacher_kind": cfg.teacher_kind, "model": model, "query_prompt": cfg.query_prompt,
            "doc_prompt": cfg.doc_prompt, "max_length": cfg.max_length, "max_seq_length": cfg.max_seq_length,
            "dtype": "float32" if cfg.dtype == "auto" else cfg.dtype,
            # only when not torch, so that score caches written before backends existed stay valid
            **({"backend": cfg.backend} if cfg.backend != "torch" else {})}


class ScoreCache:
    """Scores of one teacher: `DIR/<identity hash>/part-*.parquet` (one part per write) + `teacher.json`."""

    @staticmethod
    def path(root: Path, identity: dict) -> Path:
        return Path(root) / hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def __init__(self, root: Path, identity: dict):
        self.dir = self.path(root, identity)
        self.identity = identity
        parts = [pl.read_parquet(p) for p in sorted(self.dir.glob("part-*.parquet"))]
        empty = pl.from_arrow(CACHE_SCHEMA.empty_table())
        self.table = pl.concat([empty, *parts]).unique(KEY, keep="last") if parts else empty

    def lookup(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """`pairs` (KEY columns) with `teacher_score`, null where not cached."""
        return pairs.join(self.table, on=KEY, how="left")

    def add(self, scored: pl.DataFrame) -> None:
        if scored.height == 0:
            return
        scored = scored.select(KEY + ["teacher_score"]).cast({"teacher_score": pl.Float32})
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "teacher.json").write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n")
            # named by its content, so the same run writes the same files (deterministic, and a rerun overwrites)
            keys = hashlib.sha256("\0".join(map(str, scored.select(KEY).rows())).encode()).hexdigest()[:32]
            write_parquet(self.dir / f"part-{keys}.parquet", scored.to_arrow().cast(CACHE_SCHEMA))
        except OSError as exc:
            from hardneg.errors import HardnegError

            raise HardnegError(f"{self.dir}: cannot write the score cache ({exc.strerror}); pass another --cache "
                               f"or --no-cache") from None
        self.table = pl.concat([self.table, scored]).unique(KEY, keep="last")


class PairScorer:
    """Scores a mined part: distinct pairs only, cached ones looked up, the teacher loaded on first need."""

    def __init__(self, cfg: ScoreConfig, query_text: dict[str, str], doc_text: dict[str, str],
                 cache: ScoreCache | None):
        self.cfg, self.query_text, self.doc_text, self.cache = cfg, query_text, doc_text, cache
        self.query_hash = {q: text_hash(t) for q, t in query_text.items()}
        self.doc_hash: dict[str, int] = {}
        self.teacher = None
        self.counts = {"rows": 0, "distinct_pairs": 0, "cached_pairs": 0, "scored_pairs": 0}

    def _doc_hash(self, doc_id: str) -> int:
        h = self.doc_hash.get(doc_id)
        if h is None:
            h = self.doc_hash[doc_id] = text_hash(self.doc_text[doc_id])
        return h

    def score(self, mined: pa.Table) -> pa.Table:
        df = pl.from_arrow(mined)
        pairs = df.select("query_id", "doc_id").unique(maintain_order=True)
        pairs = pairs.with_columns(
            pl.Series("query_hash", [self.query_hash[q] for q in pairs["query_id"]], dtype=pl.UInt64),
            pl.Series("doc_hash", [self._doc_hash(d) for d in pairs["doc_id"]], dtype=pl.UInt64),
        )
        if self.cache is not None:
            pairs = self.cache.lookup(pairs)
        else:
            pairs = pairs.with_columns(pl.lit(None, dtype=pl.Float32).alias("teacher_score"))
        todo = pairs.filter(pl.col("teacher_score").is_null())
        if todo.height:
            if self.teacher is None:
                self.teacher = load_teacher(self.cfg)
            scores = self.teacher.score([self.query_text[q] for q in todo["query_id"]],
                                        [self.doc_text[d] for d in todo["doc_id"]])
            todo = todo.with_columns(pl.Series("teacher_score", scores, dtype=pl.Float32))
            if self.cache is not None:
                self.cache.add(todo)
            pairs = pl.concat([pairs.filter(pl.col("teacher_score").is_not_null()), todo])
        self.counts["rows"] += df.height
        self.counts["distinct_pairs"] += pairs.height
        self.counts["cached_pairs"] += pairs.height - todo.height
        self.counts["scored_pairs"] += todo.height
        scored = df.with_row_index("_row").join(pairs.select("query_id", "doc_id", "teacher_score"),
                                                on=["query_id", "doc_id"], how="left").sort("_row")
        return schemas.conform(scored.to_arrow(), schemas.SCORED, "scored")


def default_cache(out: Path) -> Path:
    return Path(out).absolute().parent / ".hardneg-cache" / "scores"


class ScoreWorker:
    """Scores one mined part (a unit of `hardneg.executor`): texts, cache and teacher are loaded once per process."""

    def __init__(self, data_dir: Path, cfg: ScoreConfig, cache_dir: Path | None):
        tables = data.load(data_dir, ("corpus", "queries"))
        q, c = tables["queries"], tables["corpus"]
        query_text = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
        doc_text = dict(zip(c["doc_id"].to_pylist(), data.document_texts(c)))
        cache = ScoreCache(cache_dir, teacher_identity(cfg)) if cache_dir is not None else None
        self.scorer = PairScorer(cfg, query_text, doc_text, cache)

    def __call__(self, part: Path) -> tuple[pa.Table, dict]:
        before = dict(self.scorer.counts)
        table = self.scorer.score(read_part(part, schemas.MINED))
        return table, {k: v - before[k] for k, v in self.scorer.counts.items() if k.endswith("_pairs")}


def run(mined_dir: Path, data_dir: Path, out: Path, cfg: ScoreConfig, overwrite: bool = False,
        cache: Path | None = None, use_cache: bool = True, execution: Execution = LOCAL) -> dict:
    """Score every part of `mined_dir`; `cache` defaults to `<out's parent>/.hardneg-cache/scores`."""
    require_finished(mined_dir, "mine")
    data.load(data_dir, ())  # a finished import directory, checked before anything is written
    units = [(p.name, p.absolute()) for p in finished_parts(mined_dir, "mine")]
    cache_dir = (Path(cache) if cache else default_cache(out)).absolute() if use_cache else None
    with StageWriter(out, "score", asdict(cfg), inputs=[mined_dir, data_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        spec = {"data_dir": Path(data_dir).absolute(), "cfg": cfg, "cache_dir": cache_dir}
        stats = run_units(units, ScoreWorker, spec, w.out, save_table, execution, w.has, "score: parts", w.record)
        if not w.claim_finish([name for name, _ in units], stats):
            return w.shard_pending()
        counts = pl.concat([pl.read_parquet(p, columns=["query_id", "doc_id"]).select(
            pl.len().alias("rows"), pl.struct("query_id", "doc_id").n_unique().alias("distinct_pairs"))
            for p in part_paths(w.out)]).sum() if units else None
        activation = lookup(TEACHERS, cfg.teacher_kind, "teacher kind").activation
        return w.finish(
            summary={"teacher": cfg.model, "teacher_kind": cfg.teacher_kind, "activation": activation,
                     "dtype": cfg.dtype,
                     "rows": int(counts["rows"][0]) if units else 0,
                     "distinct_pairs": int(counts["distinct_pairs"][0]) if units else 0,
                     # of the pairs scored by this run (a resumed run does not count the parts it found)
                     "cached_pairs": w.shard_stats.get("cached_pairs", 0),
                     "scored_pairs": w.shard_stats.get("scored_pairs", 0),
                     "cache": str(ScoreCache.path(cache_dir, teacher_identity(cfg))) if cache_dir else None},
            models={"teacher": cfg.model},
        )
