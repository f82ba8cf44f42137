"""`score`: a teacher scores every (query, positive) and (query, candidate) pair of the mined table.

Only distinct (query_id, doc_id) pairs are scored. A bi-encoder teacher embeds each distinct text once per run: it
reads the vectors of the dense index `mine` searched when that index's encoder is the teacher (same resolved model
and weights, max_seq_length, prompts, backend and precision: no model is loaded at all), else an embedding cache
keyed by the teacher's identity and the text's hash, else it encodes the text and adds it to the cache (see
hardneg.teachers.embeddings). A cross-encoder's scores are kept in a score cache keyed by the teacher's identity and
the pair, reused only when the query's and the document's texts are unchanged (their hashes are part of the key).

Both caches live in one directory (`--cache`): by default `RUN/.hardneg-cache` for a stage of a `hardneg run`
directory, else `OUT/.hardneg-cache`, so that nothing is written outside what the user named (docs/scoring.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from hardneg import rules as filter_rules
from hardneg import schemas
from hardneg.config import FilterConfig, RelabelConfig, ScoreConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io import data
from hardneg.io.data import text_hash
from hardneg.io.stagedir import (SUCCESS, StageWriter, content_digest, dataset_digest, finished_parts, input_dir,
                                 input_record, read_manifest, read_part, require_finished, save_table, write_parquet)
from hardneg.models import resolve, weights_digest
from hardneg.registry import TEACHERS, lookup
from hardneg.retrievers import dense
from hardneg.stages.filter import filter_table, near_duplicate_embeddings, near_duplicates
from hardneg.teachers import load_teacher
from hardneg.teachers.bi_encoder import BiEncoderTeacher
from hardneg.teachers.embeddings import (EmbeddingCache, IndexEmbeddings, index_encoder_identity,
                                         teacher_encoder_identity)

KEY = ["query_id", "doc_id", "query_hash", "doc_hash"]
CACHE_SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("query_hash", pa.uint64()),
                          ("doc_hash", pa.uint64()), ("teacher_score", pa.float32())])


def teacher_identity(cfg: ScoreConfig) -> dict:
    """What makes two teachers give the same scores (not batch size or device); a local model's weights are hashed,
    so changed weights miss the cache."""
    model = cfg.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    try:
        weights = weights_digest(resolve(cfg.model, cfg.allow_download))
    except HardnegError:
        weights = None  # loading the model reports it
    return {"teacher_kind": cfg.teacher_kind, "model": model, "query_prompt": cfg.query_prompt,
            "doc_prompt": cfg.doc_prompt, "max_length": cfg.max_length, "max_seq_length": cfg.max_seq_length,
            "dtype": "float32" if cfg.dtype == "auto" else cfg.dtype,
            # only when not torch, so that score caches written before backends existed stay valid
            **({"backend": cfg.backend} if cfg.backend != "torch" else {}),
            **({"weights_sha256": weights} if weights else {})}


def index_to_reuse(mined_dir: Path, data_dir: Path, cfg: ScoreConfig) -> tuple[Path | None, str]:
    """The dense index whose embeddings a bi-encoder teacher can read instead of encoding: the one `mine` recorded
    as its input (still the same content, built from `data_dir`) when its encoder's resolved identity is the
    teacher's. Returns (index dir or None, why)."""
    if cfg.teacher_kind != "bi-encoder":
        return None, "cross-encoder teacher"
    recorded = input_record(read_manifest(mined_dir), "index") or {}
    index_dir = Path(recorded.get("path", ""))
    if not (index_dir / SUCCESS).exists() or not dense.has_embeddings(index_dir):
        return None, "no dense index recorded by mine"
    if content_digest(index_dir) != recorded.get("digest", recorded.get("manifest_sha256")):
        return None, "the index mine used has changed since"
    if dataset_digest(index_dir) != dataset_digest(data_dir):
        return None, "the index was built from other data"
    teacher = teacher_encoder_identity(cfg)
    if teacher is None or index_encoder_identity(index_dir) != teacher:
        return None, "the index's encoder is not the teacher"
    return index_dir, "the index's encoder is the teacher"


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
            raise HardnegError(f"{self.dir}: cannot write the score cache ({exc.strerror}); pass another --cache "
                               f"or --no-cache") from None
        self.table = pl.concat([self.table, scored]).unique(KEY, keep="last")


class PairScorer:
    """Scores a mined part: distinct pairs only, cached ones looked up, the teacher loaded on first need.
    `depth_rules` (adaptive depth) with the near-duplicate rule need `doc_key` ({doc_id: `data.text_keys` key}) and,
    with its cosine threshold, `dup_embeddings`."""

    def __init__(self, cfg: ScoreConfig, query_text: dict[str, str], doc_text: dict[str, str],
                 cache: ScoreCache | None, teacher_factory=None, depth_rules: FilterConfig | None = None,
                 dup_embeddings=None, doc_key: dict[str, int] | None = None):
        self.cfg, self.query_text, self.doc_text, self.cache = cfg, query_text, doc_text, cache
        self.depth_rules, self.dup_embeddings, self.doc_key = depth_rules, dup_embeddings, doc_key
        self.query_hash = {q: text_hash(t) for q, t in query_text.items()}
        self.doc_hash: dict[str, int] = {}
        self.teacher = None
        self.teacher_factory = teacher_factory or (lambda: load_teacher(cfg))
        self.counts = {"rows": 0, "distinct_pairs": 0, "cached_pairs": 0, "scored_pairs": 0, "skipped_pairs": 0}

    def _doc_hash(self, doc_id: str) -> int:
        h = self.doc_hash.get(doc_id)
        if h is None:
            h = self.doc_hash[doc_id] = text_hash(self.doc_text[doc_id])
        return h

    def score_pairs(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Distinct (query_id, doc_id) pairs -> the same with `teacher_score` (cache first, then the teacher)."""
        if self.cache is not None:
            pairs = pairs.with_columns(
                pl.Series("query_hash", [self.query_hash[q] for q in pairs["query_id"]], dtype=pl.UInt64),
                pl.Series("doc_hash", [self._doc_hash(d) for d in pairs["doc_id"]], dtype=pl.UInt64),
            )
            pairs = self.cache.lookup(pairs)
        else:
            pairs = pairs.with_columns(pl.lit(None, dtype=pl.Float32).alias("teacher_score"))
        todo = pairs.filter(pl.col("teacher_score").is_null())
        if todo.height:
            if self.teacher is None:
                self.teacher = self.teacher_factory()
            qt = [self.query_text[q] for q in todo["query_id"]]
            ids = todo["doc_id"].to_list()
            dt = [self.doc_text[d] for d in ids]
            scores = (self.teacher.score(qt, dt, doc_ids=ids) if isinstance(self.teacher, BiEncoderTeacher)
                      else self.teacher.score(qt, dt))
            todo = todo.with_columns(pl.Series("teacher_score", scores, dtype=pl.Float32))
            if self.cache is not None:
                self.cache.add(todo)
            pairs = pl.concat([pairs.filter(pl.col("teacher_score").is_not_null()), todo])
        self.counts["distinct_pairs"] += pairs.height
        self.counts["cached_pairs"] += pairs.height - todo.height
        self.counts["scored_pairs"] += todo.height
        return pairs.select("query_id", "doc_id", "teacher_score")

    def score(self, mined: pa.Table) -> pa.Table:
        df = pl.from_arrow(mined)
        if self.depth_rules is None:
            pairs = self.score_pairs(df.select("query_id", "doc_id").unique(maintain_order=True))
        else:
            pairs = self.score_adaptively(df)
        self.counts["rows"] += df.height
        scored = df.with_row_index("_row").join(pairs, on=["query_id", "doc_id"], how="left").sort("_row")
        return schemas.conform(scored.to_arrow(), schemas.SCORED, "scored")


    def score_adaptively(self, df: pl.DataFrame) -> pl.DataFrame:
        """Score the positives and the `first_window` best-ranked candidates of every query, then, for the queries
        the filter's own rules (`filter_table` with `depth_rules`) leave with fewer than `negatives_per_query`
        negatives, the next ranks up to twice the window, and so on up to the last rank. With `top` sampling the
        filter then keeps exactly what it keeps from the whole pool: its rules judge each candidate on its own
        against the (always scored) positives, and an unscored candidate ranks below every scored one."""
        rules = self.depth_rules
        key = ["query_id", "doc_id"]
        df = df.with_row_index("_row").with_columns(
            pl.when(pl.col("is_positive")).then(pl.lit(0, dtype=pl.UInt32))
            .otherwise(pl.col("rank").rank("ordinal").over("query_id")).fill_null(0).alias("_ord"))
        dup = self._duplicates(df) if "near-duplicate" in rules.rules else None
        last = int(df["_ord"].max() or 0)
        depth = df.group_by("query_id").agg(pl.col("_ord").max().alias("_last"))
        scored = pl.DataFrame(schema={"query_id": pl.String, "doc_id": pl.String, "teacher_score": pl.Float32})
        active = df["query_id"].unique()
        # the filter's positive floor reads the scores of ranks 1..positive_floor_rank: always score them first
        window = max(self.cfg.first_window, rules.positive_floor_rank)
        while True:
            rows = df.filter(pl.col("query_id").is_in(active.implode()) & (pl.col("_ord") <= window))
            need = rows.select(key).unique(maintain_order=True).join(scored, on=key, how="anti")
            if need.height:
                scored = pl.concat([scored, self.score_pairs(need)])
            if window >= last:
                break
            view = rows.join(scored, on=key, how="left").sort("_row")
            table = schemas.conform(view.to_arrow(), schemas.SCORED, "scored")
            kept = pl.from_arrow(filter_table(table, rules, dup[view["_row"].to_numpy()] if dup is not None else None))
            done = (kept.filter(pl.col("keep") & ~pl.col("is_positive")).group_by("query_id").len()
                    .filter(pl.col("len") >= rules.negatives_per_query)["query_id"])
            exhausted = depth.filter(pl.col("_last") <= window)["query_id"]
            active = active.filter(~active.is_in(done.implode()) & ~active.is_in(exhausted.implode()))
            if active.is_empty():
                break
            window = min(window * 2, last)
        self.counts["skipped_pairs"] += df.select(key).unique().height - scored.height
        return scored

    def _duplicates(self, df: pl.DataFrame):
        """The filter's near-duplicate mask of the part's rows (it needs no teacher score)."""
        table = df.select("query_id", "doc_id", "is_positive").to_arrow()
        return np.asarray(near_duplicates(table, self.doc_key, self.depth_rules.dup_threshold, self.dup_embeddings),
                          bool)


def depth_plan(cfg: ScoreConfig, rules: FilterConfig | None, relabel: RelabelConfig | None = None,
               reads_index: bool = False) -> tuple[FilterConfig | None, str]:
    """The filter config adaptive depth stops on (None: score every candidate), and why. `reads_index`: the
    teacher reads the index's embeddings, so every score is already known and the whole pool costs nothing.

    `auto` goes adaptive only where the training file is provably the one of the whole pool: `top` sampling of
    `negatives_per_query` > 0 survivors, and a relabel step that promotes no candidate by teacher score (a deep,
    unscored candidate could be one). `adaptive` also goes adaptive then: promoted positives come from the scored
    ranks only."""
    if cfg.depth == "full":
        return None, "full: depth = full"
    if reads_index:
        return None, "full: the teacher reads the index's embeddings (every score is a dot product)"
    if rules is None:
        return None, "full: no filter rules given (hardneg run, or score --filter-config)"
    if rules.negatives_per_query == 0:
        return None, "full: negatives_per_query = 0 keeps every survivor"
    whole = [name for name in rules.rules if filter_rules.lookup(name).whole_pool]
    if whole:
        return None, f"full: rule {whole[0]} compares every candidate with the positive"
    if rules.sampling != "top":
        return None, f"full: sampling {rules.sampling} chooses among every survivor"
    promotes = relabel is None or (relabel.promote and relabel.policy == "relabel")
    if promotes and cfg.depth == "auto":
        return None, ("full: relabel promotes by teacher score, and any unscored candidate could be promoted "
                      "(depth = adaptive to promote from the scored ranks only)")
    return rules, "adaptive" + (": promotions from the scored ranks only" if promotes else "")


def recorded_config(cfg: ScoreConfig, rules: FilterConfig | None = None, relabel: RelabelConfig | None = None,
                    mined_dir: Path | None = None, data_dir: Path | None = None) -> dict:
    """The config `score` records (and `hardneg run` compares): with adaptive depth, its output depends on the
    filter's rules too."""
    reads_index = mined_dir is not None and index_to_reuse(mined_dir, data_dir, cfg)[0] is not None
    plan, _ = depth_plan(cfg, rules, relabel, reads_index)
    return {**asdict(cfg), **({"depth_rules": asdict(plan)} if plan is not None else {})}


def default_cache(out: Path, run_dir: Path | None = None) -> Path:
    """`RUN/.hardneg-cache` for a stage of a `hardneg run` directory, else inside the stage's own `--out`."""
    return Path(run_dir if run_dir is not None else out).absolute() / ".hardneg-cache"


class ScoreWorker:
    """Scores one mined part (a unit of `hardneg.executor`): texts, caches and teacher are loaded once per process.

    `index_dir`: a dense index whose encoder is the (bi-encoder) teacher; `cache_dir`: where the score cache
    (cross-encoder) or the embedding cache (bi-encoder) lives, None for neither."""

    def __init__(self, data_dir: Path, cfg: ScoreConfig, cache_dir: Path | None, index_dir: Path | None = None,
                 depth_rules: FilterConfig | None = None, dup_index: Path | None = None):
        tables = data.load(data_dir, ("corpus", "queries"))
        q, c = tables["queries"], tables["corpus"]
        query_text = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
        texts = data.document_texts(c)
        doc_text = dict(zip(c["doc_id"].to_pylist(), texts))
        depth = {"depth_rules": depth_rules}
        if depth_rules is not None and "near-duplicate" in depth_rules.rules:
            depth["doc_key"] = data.text_keys_by_id(c)
            depth["dup_embeddings"] = near_duplicate_embeddings(depth_rules, dup_index, doc_text, texts)
        if cfg.teacher_kind == "bi-encoder":
            sources = [IndexEmbeddings(index_dir)] if index_dir is not None else []
            ident = teacher_encoder_identity(cfg) if cache_dir is not None else None
            emb_cache = EmbeddingCache(cache_dir, ident) if ident is not None else None
            self.bi_encoder = BiEncoderTeacher(cfg, sources, emb_cache)
            self.scorer = PairScorer(cfg, query_text, doc_text, None, lambda: self.bi_encoder, **depth)
        else:
            self.bi_encoder = None
            cache = ScoreCache(cache_dir, teacher_identity(cfg)) if cache_dir is not None else None
            self.scorer = PairScorer(cfg, query_text, doc_text, cache, **depth)

    def _counts(self) -> dict:
        """What scoring cost so far: pairs from the cache, scored, skipped by depth; texts encoded, reused."""
        counts = {k: self.scorer.counts[k] for k in ("cached_pairs", "scored_pairs", "skipped_pairs")}
        if self.bi_encoder is not None:
            counts.update(self.bi_encoder.counts)
        return counts

    def __call__(self, part: Path) -> tuple[pa.Table, dict]:
        before = self._counts()
        table = self.scorer.score(read_part(part, schemas.MINED))
        return table, {**{k: v - before.get(k, 0) for k, v in self._counts().items()}, **part_stats(table)}


def part_stats(scored: pa.Table) -> dict:
    """The statistics of one scored part that the manifest's summary adds up: its rows and distinct pairs."""
    pairs = pl.from_arrow(scored.select(["query_id", "doc_id"])).select(pl.struct("query_id", "doc_id").n_unique())
    return {"rows": scored.num_rows, "distinct_pairs": int(pairs.item())}


def run(mined_dir: Path, data_dir: Path, out: Path, cfg: ScoreConfig, overwrite: bool = False,
        cache: Path | None = None, use_cache: bool = True, execution: Execution = LOCAL,
        run_dir: Path | None = None, filter_cfg: FilterConfig | None = None,
        relabel_cfg: RelabelConfig | None = None) -> dict:
    """Score every part of `mined_dir`; `cache` defaults to `default_cache(out, run_dir)` (`run_dir`: the
    `hardneg run` directory `out` belongs to). `filter_cfg`, `relabel_cfg`: what the next stages will apply, for
    adaptive depth (`depth_plan`)."""
    require_finished(mined_dir, "mine")
    data.load(data_dir, ())  # a finished import directory, checked before anything is written
    units = [(p.name, p.absolute()) for p in finished_parts(mined_dir, "mine")]
    cache_dir = (Path(cache) if cache else default_cache(out, run_dir)).absolute() if use_cache else None
    index_dir, why = index_to_reuse(mined_dir, data_dir, cfg)
    rules, depth_why = depth_plan(cfg, filter_cfg, relabel_cfg, index_dir is not None)
    dup_index = None
    if rules is not None and rules.dup_threshold is not None:  # the embeddings `filter` would pick by default
        recorded = input_dir(mined_dir, "index")
        dup_index = recorded.absolute() if recorded is not None and dense.has_embeddings(recorded) else None
    config = recorded_config(cfg, filter_cfg, relabel_cfg, mined_dir, data_dir)
    with StageWriter(out, "score", config, inputs=[mined_dir, data_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        spec = {"data_dir": Path(data_dir).absolute(), "cfg": cfg, "cache_dir": cache_dir,
                "index_dir": index_dir.absolute() if index_dir is not None else None, "depth_rules": rules,
                "dup_index": dup_index}
        stats = run_units(units, ScoreWorker, spec, w.out, save_table, execution, w.has, "score: parts", w.record)
        names = [name for name, _ in units]
        if not w.claim_finish(names, stats):
            return w.shard_pending()
        counts = w.unit_totals(names, lambda path: part_stats(read_part(path, schemas.SCORED)))
        activation = lookup(TEACHERS, cfg.teacher_kind, "teacher kind").activation
        st = w.shard_stats
        summary = {"teacher": cfg.model, "teacher_kind": cfg.teacher_kind, "activation": activation,
                   "dtype": cfg.dtype,
                   "rows": counts.get("rows", 0),
                   "distinct_pairs": counts.get("distinct_pairs", 0),
                   # of the pairs scored by this run (a resumed run does not count the parts it found)
                   "cached_pairs": st.get("cached_pairs", 0),
                   "scored_pairs": st.get("scored_pairs", 0),
                   "depth": depth_why,
                   "pairs_skipped_by_depth": st.get("skipped_pairs", 0)}
        models = {"teacher": cfg.model}
        if cfg.teacher_kind == "bi-encoder":
            summary.update({"texts_encoded": st.get("texts_encoded", 0),
                            "embeddings_reused": st.get("embeddings_reused", 0),
                            "embeddings_from_index": index_dir is not None, "embeddings_from_index_why": why})
            if index_dir is not None:
                models["teacher_embeddings"] = str(index_dir)
        if cache_dir is None:
            summary["cache"] = None
        elif cfg.teacher_kind == "bi-encoder":
            ident = teacher_encoder_identity(cfg)
            summary["cache"] = str(EmbeddingCache.path(cache_dir, ident)) if ident else None
        else:
            summary["cache"] = str(ScoreCache.path(cache_dir, teacher_identity(cfg)))
        return w.finish(summary=summary, models=models)
