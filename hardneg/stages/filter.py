"""`filter`: positive-aware rules decide which candidates are safe negatives; every dropped row keeps its reason.

Rules compare a candidate's teacher score `s` with its query's reference positive score `p` (the min, mean or max of
the query's positives' teacher scores; `min` by default, the safe choice), or look at its rank or text. The rules
are defined in one place, the registry `hardneg.rules.RULES`: each rule's condition, the reason it records, its
checks and its description (docs/filters.md's rule table is generated from it).

With `positive_floor_rank = N`, a query whose reference positive scores below *every* one of the retriever's top N
candidates (ranks 1..N) is compared against the weakest of those instead: the teacher disagrees with the label there
(under the hidden-positive protocol its score of the positive is then below most of the pool, and the rules would
leave no negative or only the bottom of the pool). Queries whose positive the teacher ranks among its top N are
unchanged. The floor needs only the top N ranks' scores.

Scores are used as the teacher wrote them (raw logits or cosines, see the score manifest's `activation`), so a
threshold means the same thing on every run of the same teacher.

The first rule that fires names the reason; a candidate `score` did not score (adaptive depth: its query had its
negatives from better-ranked candidates) and that no rule dropped is `not_scored`. Survivors beyond `negatives_per_query` are dropped as `not_sampled`;
which survivors stay is chosen by `sampling` (`top`: best retriever rank first, `random`, `simans`; see
hardneg.sampling). A query left with fewer than `negatives_per_query` negatives is handled by `short_policy`:

* `keep`: exported with the negatives it has (the manifest counts and lists such queries);
* `drop`: its negatives are dropped as `too_few_negatives`, so no training row is written for it;
* `pad`:  filled up from candidates ranked *below* `rank_max` (deeper, so less likely to be false negatives) that
          every other rule lets through, nearest rank first; a query that is still short stays short. Candidates
          that a score or duplicate rule dropped are never used to pad.

Labeled positives are always kept.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from hardneg import rules, schemas
from hardneg.config import EncoderConfig, FilterConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io import data
from hardneg.io.stagedir import StageWriter, finished_parts, input_dir, read_part, require_finished, save_table
from hardneg.models import load_sentence_transformer
from hardneg.retrievers import dense
from hardneg.sampling import select
from hardneg.scores import positive_reference

NOT_SCORED = "not_scored"  # see hardneg.stages.score: adaptive depth
SHOWN_SHORT_QUERIES = 20  # ids of short queries listed in the manifest (all are counted)


def filter_table(scored: pa.Table, cfg: FilterConfig, duplicate=None) -> pa.Table:
    """Pure: scored rows -> the same rows, in the same order, with `keep` and `reason`.

    `duplicate` (one bool per row, see `near_duplicates`) is needed when the `near-duplicate` rule is on.
    """
    active = [rules.lookup(r) for r in cfg.rules]
    window = rules.RULES["rank-window"]
    df = pl.from_arrow(scored).with_row_index("_row")
    if rules.RULES["near-duplicate"] in active:
        if duplicate is None:
            raise ValueError("the near-duplicate rule needs the `duplicate` mask")
        df = df.with_columns(pl.Series("_dup", duplicate, dtype=pl.Boolean))
    df = df.join(positive_reference(df, cfg.positive_reference, cfg.positive_floor_rank), on="query_id",
                 how="left").sort("_row")
    candidate = ~pl.col("is_positive")
    reason = pl.when(pl.col("is_positive")).then(pl.lit(None, dtype=pl.String))
    for rule in active:
        reason = reason.when(rule.condition(cfg).fill_null(False)).then(pl.lit(rule.reason))
    # a candidate `score` left unscored (adaptive depth: its query had its negatives from better ranks)
    reason = reason.when(pl.col("teacher_score").is_null()).then(pl.lit(NOT_SCORED))
    df = df.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias("reason"))
    n = cfg.negatives_per_query
    if n > 0:
        survivor = pl.col("reason").is_null() & candidate
        chosen = select(df, survivor, n, cfg.sampling, seed=cfg.seed, a=cfg.simans_a, b=cfg.simans_b)
        df = df.with_columns(
            pl.when(survivor & ~chosen).then(pl.lit("not_sampled")).otherwise(pl.col("reason")).alias("reason")
        )
        kept = (pl.col("reason").is_null() & candidate).sum().over("query_id")
        if cfg.short_policy == "pad":
            others = [r.condition(cfg).fill_null(False) for r in active if r is not window]
            deeper = (candidate & (pl.col("reason") == window.reason) & (pl.col("rank") > cfg.rank_max)
                      & pl.col("teacher_score").is_not_null())
            if others:
                deeper = deeper & ~pl.any_horizontal(others)
            order = pl.when(deeper).then(pl.col("rank")).otherwise(None).rank("ordinal").over("query_id")
            df = df.with_columns(
                pl.when(deeper & (order <= n - kept)).then(pl.lit(None, dtype=pl.String))
                .otherwise(pl.col("reason")).alias("reason")
            )
        elif cfg.short_policy == "drop":
            df = df.with_columns(
                pl.when(pl.col("reason").is_null() & candidate & (kept < n)).then(pl.lit("too_few_negatives"))
                .otherwise(pl.col("reason")).alias("reason")
            )
    df = df.with_columns(pl.col("reason").is_null().alias("keep"))
    return schemas.conform(df.to_arrow(), schemas.FILTERED, "filtered")


# -- near-duplicates of positives ------------------------------------------------------------------------------

class DocEmbeddings:
    """Normalized document embeddings, by doc_id: a dense index's embeddings (`hardneg.retrievers.dense`), or a
    model's encodings of the documents asked for (each encoded once)."""

    def __init__(self, index_dir: Path | None, model: str, doc_text: dict[str, str], corpus_digest: str):
        self.doc_text = doc_text
        self.model_name = model
        self.model = None
        self.rows: dict[str, int] = {}
        self.source = embeddings_source(index_dir, model)
        if index_dir is not None:
            ids, self.emb, params = dense.load_embeddings(index_dir)
            if params.get("text_sha256") != corpus_digest:
                raise HardnegError(f"{index_dir}: its dense embeddings are of other document texts than the data's; "
                                   f"pass the index built from this data (--index) or none")
            self.rows = {d: i for i, d in enumerate(ids)}
        else:
            self.emb = np.zeros((0, 0), dtype=np.float32)

    def rows_of(self, doc_ids: list[str]) -> np.ndarray:
        missing = [d for d in dict.fromkeys(doc_ids) if d not in self.rows]
        if missing:
            if self.model is None:
                self.cfg = EncoderConfig(model=self.model_name)
                self.model = load_sentence_transformer(self.model_name, None, None, False)
            new = dense.encode(self.model, [self.doc_text[d] for d in missing], self.cfg, "",
                               "filter: embedding documents")
            start = self.emb.shape[0]
            self.emb = new if start == 0 else np.concatenate([self.emb, new])
            self.rows.update({d: start + i for i, d in enumerate(missing)})
        return np.fromiter((self.rows[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))


def near_duplicate_embeddings(cfg: FilterConfig, index_dir: Path | None, doc_text: dict[str, str],
                              texts: list[str]) -> DocEmbeddings | None:
    """The document embeddings that `cfg`'s near-duplicate rule needs for its cosine threshold (from `index_dir`'s
    dense index, else `cfg.dup_model`), or None when it needs none. `texts`: the corpus's texts, in its order."""
    if "near-duplicate" not in cfg.rules or cfg.dup_threshold is None:
        return None
    return DocEmbeddings(index_dir, cfg.dup_model, doc_text, dense.text_digest(texts))


def embeddings_source(index_dir: Path | None, model: str) -> str:
    """Where `DocEmbeddings` takes its vectors from, as the manifest names it."""
    if index_dir is None:
        return f"model:{model}"
    return f"index:{index_dir} ({(dense.read_params(index_dir) or {}).get('model')})"


def near_duplicates(scored: pa.Table, text_key: dict[str, int], threshold: float | None,
                    embeddings: DocEmbeddings | None, chunk: int = 65536) -> list[bool]:
    """Per row: is this candidate a near-duplicate of one of its query's positives (same normalized text, i.e. the
    same `text_key`, or document-document cosine >= threshold)? Positives themselves are False.

    The same-text test is a join on (query, key), so its memory grows with the rows, not with candidates x positives
    (NFCorpus queries have ~40 positives); only the cosine test pairs every candidate with every positive."""
    df = pl.from_arrow(scored.select(["query_id", "doc_id", "is_positive"])).with_row_index("_row")
    df = df.with_columns(pl.col("doc_id").replace_strict(text_key, return_dtype=pl.UInt64).alias("_key"))
    pos = df.filter(pl.col("is_positive")).select("query_id", "_key", pl.col("doc_id").alias("pos_id"))
    cand = df.filter(~pl.col("is_positive"))
    same = cand.join(pos, on=["query_id", "_key"], how="inner").filter(pl.col("doc_id") != pl.col("pos_id"))
    hit = np.zeros(scored.num_rows, dtype=bool)
    hit[same["_row"].to_numpy()] = True
    if threshold is not None:
        pairs = (cand.select("_row", "query_id", "doc_id").join(pos.select("query_id", "pos_id"), on="query_id")
                 .filter(pl.col("doc_id") != pl.col("pos_id")))
        for i in range(0, pairs.height, chunk):
            part = pairs.slice(i, chunk)
            x = np.asarray(embeddings.emb[embeddings.rows_of(part["doc_id"].to_list())], dtype=np.float32)
            y = np.asarray(embeddings.emb[embeddings.rows_of(part["pos_id"].to_list())], dtype=np.float32)
            hit[part["_row"].to_numpy()[np.einsum("ij,ij->i", x, y) >= threshold]] = True
    return hit.tolist()


# -- stage -------------------------------------------------------------------------------------------------------

def check_scores(table: pa.Table, where: str, unscored_ok: bool = False) -> None:
    """A NaN or missing teacher score would silently switch the rules off for its query: refuse it, naming rows.
    `unscored_ok` (score used adaptive depth): a candidate it did not score is `not_scored`, said so, not silent; a
    positive is always scored and NaN is never a score."""
    missing = pc.is_null(table["teacher_score"])
    if unscored_ok:
        missing = pc.and_kleene(missing, table["is_positive"])
    bad = pc.or_kleene(missing, pc.fill_null(pc.is_nan(table["teacher_score"]), False))
    rows = pc.indices_nonzero(bad).to_pylist()
    if rows:
        shown = ", ".join(f"row {r} (query {table['query_id'][r].as_py()!r}, doc {table['doc_id'][r].as_py()!r})"
                          for r in rows[:3])
        raise HardnegError(f"{where}: {len(rows)} rows have a NaN or missing teacher_score: {shown}"
                           f"{' ...' if len(rows) > 3 else ''}; the teacher failed on them (check the model, its "
                           f"--dtype, and --max-length), rescore with `hardneg score ... --overwrite`")


def part_stats(filtered: pa.Table, cfg: FilterConfig) -> dict:
    """The statistics of one filtered part that the manifest's summary adds up (`summary`). Every row of a query is
    in the same part (`mine` writes them so), so per-query counts add up over parts too."""
    df = pl.from_arrow(filtered.select(["query_id", "rank", "is_positive", "keep", "reason"]))
    neg = df.filter(~pl.col("is_positive"))
    per_query = df.group_by("query_id").agg((pl.col("keep") & ~pl.col("is_positive")).sum().alias("n"))
    reasons = neg.filter(pl.col("reason").is_not_null())["reason"].value_counts()
    stats = {"rows": df.height, "queries": per_query.height, "negatives_kept": int(neg["keep"].sum()),
             "dropped_by_reason": {r: int(c) for r, c in reasons.iter_rows()}}
    if cfg.negatives_per_query > 0:
        short = per_query.filter(pl.col("n") < cfg.negatives_per_query).sort("query_id")
        stats["queries_short"] = short.height
        stats["short_query_ids"] = short["query_id"].head(SHOWN_SHORT_QUERIES).to_list()
        if cfg.short_policy == "drop":
            stats["queries_dropped_short"] = int(neg.filter(pl.col("reason") == "too_few_negatives")["query_id"]
                                                 .n_unique())
        if cfg.short_policy == "pad":
            stats["negatives_padded"] = int(neg.filter(pl.col("keep") & (pl.col("rank") > cfg.rank_max)).height)
    return stats


def summary(stats: dict, cfg: FilterConfig) -> dict:
    """The manifest's summary from the parts' statistics (`part_stats`), added up."""
    reasons = sorted(stats.get("dropped_by_reason", {}).items(), key=lambda rc: (-rc[1], rc[0]))
    res = {"rows": stats.get("rows", 0), "queries": stats.get("queries", 0),
           "negatives_kept": stats.get("negatives_kept", 0), "dropped_by_reason": dict(reasons),
           "short_policy": cfg.short_policy}
    if cfg.negatives_per_query > 0:
        res["queries_short"] = stats.get("queries_short", 0)  # fewer than negatives_per_query negatives
        res["short_query_ids"] = sorted(stats.get("short_query_ids", []))[:SHOWN_SHORT_QUERIES]
        if cfg.short_policy == "drop":
            res["queries_dropped_short"] = stats.get("queries_dropped_short", 0)
        if cfg.short_policy == "pad":
            res["negatives_padded"] = stats.get("negatives_padded", 0)
    return res


class FilterWorker:
    """Filters one scored part (a unit of `hardneg.executor`); built once per process with what the near-duplicate
    rule needs: the document texts of `data_dir` and, with `dup_threshold`, `DocEmbeddings` (from `index_dir`'s
    dense index, else `dup_model`). Needs no GPU (pass --ray-gpus-per-actor to give `dup_model` one)."""

    cpu_only = True

    def __init__(self, cfg: FilterConfig, adaptive: bool, data_dir: Path | None = None,
                 index_dir: Path | None = None):
        self.cfg, self.adaptive = cfg, adaptive
        self.text_key, self.embeddings = None, None
        if "near-duplicate" in cfg.rules:
            corpus = data.load(data_dir, ("corpus",))["corpus"]
            self.text_key = data.text_keys_by_id(corpus)
            texts = data.document_texts(corpus)
            doc_text = dict(zip(corpus["doc_id"].to_pylist(), texts))
            self.embeddings = near_duplicate_embeddings(cfg, index_dir, doc_text, texts)

    def __call__(self, part: Path) -> tuple[pa.Table, dict]:
        table = read_part(part, schemas.SCORED)
        check_scores(table, str(part), unscored_ok=self.adaptive)
        mask = (near_duplicates(table, self.text_key, self.cfg.dup_threshold, self.embeddings)
                if self.text_key is not None else None)
        filtered = filter_table(table, self.cfg, mask)
        return filtered, part_stats(filtered, self.cfg)


def save_filtered(path: Path, filtered: pa.Table, dropped_out: Path | None = None) -> int:
    """A filtered part as the executors write it: its dropped rows into `dropped_out` first (so the main output's
    part is the one to check for both), then the part."""
    if dropped_out is not None:
        save_table(Path(dropped_out) / path.name, filtered.filter(pc.invert(filtered["keep"])))
    return save_table(path, filtered)


def run(scored_dir: Path, out: Path, cfg: FilterConfig, overwrite: bool = False, data_dir: Path | None = None,
        index_dir: Path | None = None, dropped_out: Path | None = None, execution: Execution = LOCAL) -> dict:
    """Filter every part of `scored_dir`. The near-duplicate rule reads document texts from `data_dir` (default:
    the data dir recorded by `score`) and, with `dup_threshold`, embeddings from `index_dir`'s dense index (default:
    the index recorded by `mine`, when it has dense embeddings of the same texts), else from `dup_model`.
    `dropped_out` receives the dropped rows, with their reasons, as a stage directory of its own."""
    score_manifest = require_finished(scored_dir, "score")
    dup = "near-duplicate" in cfg.rules
    summary_extra = {}
    depth_rules = score_manifest.get("config", {}).get("depth_rules")
    if depth_rules is not None:  # `score` stopped early on these rules: other rules may leave queries short
        summary_extra["scored_for_these_rules"] = depth_rules == asdict(cfg)
        if depth_rules != asdict(cfg):
            print(f"warning: {scored_dir} was scored with adaptive depth for other filter rules; candidates it did "
                  f"not score are dropped as not_scored (rescore, or score with --depth full)", file=sys.stderr)
    if dup:
        data_dir = data_dir or input_dir(scored_dir, "import", score_manifest)
        if data_dir is None:
            raise HardnegError(f"{scored_dir}: the rule near-duplicate needs the document texts; pass --data DATA")
        data.load(data_dir, ())  # a finished import directory, checked before anything is written
        if cfg.dup_threshold is not None:
            if index_dir is None:
                mined = input_dir(scored_dir, "mine", score_manifest)
                chained = input_dir(mined, "index", require_finished(mined, "mine")) if mined else None
                if chained is not None and dense.has_embeddings(chained):
                    index_dir = chained
            elif not dense.has_embeddings(index_dir):
                raise HardnegError(f"{index_dir}: has no dense embeddings ({dense.EMBEDDINGS}); pass an index "
                                   f"built with --retriever dense or hybrid, or no --index to embed with dup_model")
            summary_extra["dup_embeddings"] = embeddings_source(index_dir, cfg.dup_model)
        summary_extra["dup_texts"] = str(data_dir)
    inputs = [scored_dir]
    units = [(p.name, p.absolute()) for p in finished_parts(scored_dir, "score")]
    adaptive = str(score_manifest.get("summary", {}).get("depth", "")).startswith("adaptive")
    with contextlib.ExitStack() as stack:
        reads = [data_dir, index_dir, dropped_out]
        w = stack.enter_context(StageWriter(out, "filter", asdict(cfg), inputs=inputs, overwrite=overwrite,
                                            shard=execution.shard, reads=reads))
        side = None
        if dropped_out is not None:
            # it finishes just before the main output, so it is no requeue no-op: if only it finished (a kill in
            # between), that is an error, not a silent skip of the main output
            side = stack.enter_context(StageWriter(dropped_out, "filter-dropped", asdict(cfg), inputs=inputs,
                                                   overwrite=overwrite, shard=execution.shard, requeue_ok=False,
                                                   reads=[data_dir, index_dir, out]))
        spec = {"cfg": cfg, "adaptive": adaptive,
                "data_dir": Path(data_dir).absolute() if dup else None,
                "index_dir": Path(index_dir).absolute() if dup and index_dir is not None else None}
        save = functools.partial(save_filtered, dropped_out=side.out.absolute() if side is not None else None)
        run_units(units, FilterWorker, spec, w.out, save, execution,
                  lambda name: w.has(name) and (side is None or side.has(name)), "filter: parts", w.record)
        # a part of `side` is written before its part of `w`, so checking `w`'s parts covers both
        names = [name for name, _ in units]
        if not w.claim_finish(names):
            return w.shard_pending()
        stats = w.unit_totals(names, lambda path: part_stats(read_part(path, schemas.FILTERED), cfg))
        result = {**summary(stats, cfg), **summary_extra}
        if side is not None:
            side.finish(summary={"dropped_from": str(out)})
            result["dropped_out"] = str(dropped_out)
        return w.finish(summary=result)
