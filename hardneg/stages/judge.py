"""`judge`: LLM judges read the *suspects* among the filtered candidates and say whether each is relevant to its
query (a false negative), in a cascade, with every verdict recorded.

Suspects (the rule that bounds the cost, printed before the first call):

* candidates the filter dropped for one of `suspect_reasons` (default: the score rules `perc_pos`, `margin_pos`,
  `above_max_score`, and `near_duplicate_of_positive`): the teacher already thinks they look like a positive;
* kept negatives whose teacher score is within `margin` of the query's reference positive (`positive_reference`,
  `min` by default): the negatives the filter almost dropped;
* at most `max_per_query` of them per query, highest teacher score first. Labeled positives are never suspects, and
  candidates dropped only as `not_sampled`, `outside_rank_window`, `below_min_score` or `too_few_negatives` are not
  (unless listed in `suspect_reasons`).

Cascade: judge 1 reads every suspect; judge k+1 reads only those judge k *flagged* (P(yes) >= its threshold). The
last judge that read a row decides: `judge_relevant`, `judge_score`, `judge` (its `backend:model` label),
`judge_level` (1-based). `verdicts` lists every judge's verdict on the row (label, prompt hash, score, flagged). A
verdict whose answer could not be parsed has a null score and is not flagged. `hardneg relabel` then applies
RLHN's actions (`--policy remove | hn_remove | rlhn`).

Verdicts are cached on disk per judge identity (backend, model, GGUF file, dtype; not endpoint, batch size or
concurrency), keyed by a hash of the full chat (prompt template, cut texts): a rerun, a resumed run or another
filter's output re-asks nothing already answered. The cache is written every chunk of calls, so a killed run loses
at most one chunk of answers, and resumes (part by part, like every stage) with identical output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
from tqdm.auto import tqdm

from hardneg import schemas
from hardneg.config import JudgeConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution, run_units
from hardneg.io import data
from hardneg.io.data import text_hash
from hardneg.io.stagedir import (StageWriter, finished_parts, read_part, require_finished, save_table,
                                 write_parquet)
from hardneg.judges import (JudgeSpec, estimate_tokens, identity, label, load_judge, messages, prompt_hash,
                            prompt_template, spec_from_dict)
from hardneg.scores import positive_reference

CACHE_SCHEMA = pa.schema([("key", pa.uint64()), ("prompt_hash", pa.string()), ("score", pa.float32())])
CHUNK = 64  # calls between cache writes (rounded to the judge's batch size)


def suspect_mask(filtered: pl.DataFrame, cfg: JudgeConfig) -> pl.Series:
    """Pure: which rows of a filtered table are suspects (see the module doc)."""
    df = filtered.with_row_index("_row")
    df = df.join(positive_reference(df, cfg.positive_reference), on="query_id", how="left").sort("_row")
    s = pl.col("teacher_score")
    by_reason = pl.col("reason").is_in(list(cfg.suspect_reasons)).fill_null(False)
    by_margin = (pl.col("keep") & (s >= pl.col("_pos") - cfg.margin)).fill_null(False) \
        if cfg.margin is not None else pl.lit(False)
    cand = ~pl.col("is_positive") & (by_reason | by_margin)
    if cfg.max_per_query:
        order = pl.when(cand).then(-s.fill_null(float("-inf"))).otherwise(None)
        cand = cand & (order.rank("ordinal").over("query_id") <= cfg.max_per_query)
    return df.select(cand.fill_null(False).alias("suspect"))["suspect"]


def specs(cfg: JudgeConfig) -> list[JudgeSpec]:
    return [spec_from_dict(j, f"judge {i + 1}") for i, j in enumerate(cfg.judges)]


class VerdictCache:
    """Verdicts of one judge: `DIR/<identity hash>/part-*.parquet` (key = hash of the chat, prompt hash, score)."""

    def __init__(self, root: Path, ident: dict):
        self.dir = Path(root) / hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        self.identity = ident
        self.scores: dict[int, float | None] = {}
        for p in sorted(self.dir.glob("part-*.parquet")):
            t = pl.read_parquet(p)
            self.scores.update(zip(t["key"].to_list(), t["score"].to_list()))

    def add(self, keys: list[int], phash: str, scores: list[float | None]) -> None:
        if not keys:
            return
        table = pa.table({"key": pa.array(keys, pa.uint64()), "prompt_hash": pa.array([phash] * len(keys)),
                          "score": pa.array(scores, pa.float32())}, schema=CACHE_SCHEMA)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "judge.json").write_text(json.dumps(self.identity, indent=2, sort_keys=True) + "\n")
            name = hashlib.sha256(",".join(map(str, keys)).encode()).hexdigest()[:32]
            write_parquet(self.dir / f"part-{name}.parquet", table)
        except OSError as exc:
            raise HardnegError(f"{self.dir}: cannot write the verdict cache ({exc.strerror}); pass another --cache "
                               f"or --no-cache") from None
        # stored as float32, read back as float32: a fresh verdict and a cached one are the same number
        self.scores.update(zip(keys, table["score"].to_pylist()))


def default_cache(out: Path, run_dir: Path | None = None) -> Path:
    """`RUN/.hardneg-cache/judge` for the judge stage of a `hardneg run` directory, else inside `--out` itself: nothing
    is written outside the directories the user named (as for score's caches)."""
    return Path(run_dir if run_dir is not None else out).absolute() / ".hardneg-cache" / "judge"


@dataclass
class Level:
    spec: JudgeSpec
    label: str
    cache: VerdictCache | None
    judge: object = None  # loaded on the first call

    def lookup(self, keys: list[int]) -> list[int]:
        """Positions of `keys` with no cached verdict."""
        have = self.cache.scores if self.cache is not None else {}
        return [i for i, k in enumerate(keys) if k not in have]


class JudgeWorker:
    """Judges the suspects of one filtered part (a unit of `hardneg.executor`); texts, caches and (on first need)
    the judges' models are loaded once per process."""

    def __init__(self, data_dir: Path, cfg: JudgeConfig, cache_dir: Path | None):
        tables = data.load(data_dir, ("corpus", "queries"))
        q, c = tables["queries"], tables["corpus"]
        self.query_text = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
        self.doc_text = dict(zip(c["doc_id"].to_pylist(), data.document_texts(c)))
        self.cfg = cfg
        self.template = prompt_template(cfg.instruction)
        self.phash = prompt_hash(self.template, cfg.max_query_chars, cfg.max_doc_chars)
        self.levels = [Level(s, label(s), VerdictCache(cache_dir, identity(s)) if cache_dir is not None else None)
                       for s in specs(cfg)]

    def conversations(self, pairs: pl.DataFrame) -> tuple[list[list[dict]], list[int]]:
        convs = [messages(self.template, self.query_text[q], self.doc_text[d], self.cfg.max_query_chars,
                          self.cfg.max_doc_chars) for q, d in pairs.select("query_id", "doc_id").iter_rows()]
        return convs, [text_hash(json.dumps(c, sort_keys=True)) for c in convs]

    def suspects(self, part: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
        df = pl.from_arrow(read_part(part, schemas.FILTERED))
        df = df.with_columns(suspect_mask(df, self.cfg))
        pairs = df.filter(pl.col("suspect")).select("query_id", "doc_id").unique(maintain_order=True)
        return df, pairs

    def _ask(self, n: int, level: Level, keys: list[int], convs: list[list[dict]]) -> tuple[dict, int]:
        """Verdicts of `level` for `keys` (cached, or asked in chunks that are cached as they come), and the number
        of calls made."""
        todo = level.lookup(keys)
        missing = set(todo)
        found = {keys[i]: level.cache.scores[keys[i]] for i in range(len(keys)) if i not in missing} \
            if level.cache is not None else {}
        if todo:
            if level.judge is None:
                level.judge = load_judge(level.spec)
            size = max(level.spec.batch_size, level.spec.concurrency)
            size *= max(1, CHUNK // size)
            with tqdm(total=len(todo), desc=f"judge {n}: {level.label}", unit="call",
                      disable=len(todo) <= size) as bar:
                for i in range(0, len(todo), size):
                    chunk = todo[i:i + size]
                    scores = level.judge.judge([convs[j] for j in chunk])
                    ck = [keys[j] for j in chunk]
                    if level.cache is not None:
                        level.cache.add(ck, self.phash, scores)
                        scores = [level.cache.scores[k] for k in ck]
                    else:  # the same float32 rounding as a cached verdict
                        scores = pa.array(scores, pa.float32()).to_pylist()
                    found.update(zip(ck, scores))
                    bar.update(len(chunk))
        return found, len(todo)

    def __call__(self, part: Path) -> tuple[pa.Table, dict]:
        df, pairs = self.suspects(part)
        convs, keys = self.conversations(pairs)
        stats: dict = {}
        verdicts: list[list[dict]] = [[] for _ in keys]
        active = list(range(len(keys)))
        for n, level in enumerate(self.levels, 1):
            if not active:
                break
            scores, calls = self._ask(n, level, [keys[i] for i in active], [convs[i] for i in active])
            flagged = []
            for i in active:
                score = scores[keys[i]]
                flag = score is not None and score >= level.spec.threshold
                verdicts[i].append({"judge": level.label, "prompt_hash": self.phash, "score": score, "flagged": flag})
                if flag:
                    flagged.append(i)
            stats[f"judged_{n}"] = len(active)
            stats[f"calls_{n}"] = calls
            stats[f"flagged_{n}"] = len(flagged)
            stats[f"unparsed_{n}"] = sum(1 for i in active if verdicts[i][-1]["score"] is None)
            active = flagged
        last = [v[-1] if v else None for v in verdicts]
        found = pl.DataFrame({
            "query_id": pairs["query_id"], "doc_id": pairs["doc_id"],
            "judge_relevant": pl.Series([v["flagged"] if v else None for v in last], dtype=pl.Boolean),
            "judge_score": pl.Series([v["score"] if v else None for v in last], dtype=pl.Float32),
            "judge": pl.Series([v["judge"] if v else None for v in last], dtype=pl.String),
            "judge_level": pl.Series([len(v) if v else None for v in verdicts], dtype=pl.Int32),
            "prompt_hash": pl.Series([self.phash] * len(keys), dtype=pl.String),
            "_v": pl.Series([json.dumps(v) for v in verdicts], dtype=pl.String),
        })
        out = df.with_row_index("_row").join(found, on=["query_id", "doc_id"], how="left").sort("_row")
        out = out.with_columns(*(pl.when(pl.col("suspect")).then(pl.col(c)).otherwise(None).alias(c)
                                 for c in ("judge_relevant", "judge_score", "judge", "judge_level", "prompt_hash",
                                           "_v")))
        table = out.drop("_v").to_arrow()
        v = pa.array([json.loads(x) if x is not None else None for x in out["_v"].to_list()],
                     pa.list_(schemas.VERDICT))
        table = table.append_column("verdicts", v)
        table = schemas.conform(table, schemas.JUDGED, "judged")
        return table, {**stats, **part_stats(table)}


def part_stats(judged: pa.Table) -> dict:
    """The statistics of one judged part that the manifest's summary adds up: suspects, judged relevant, and how
    many each judge of the cascade decided (the last one that read them)."""
    df = pl.from_arrow(judged.select(["suspect", "judge_relevant", "judge_level"]))
    levels = df["judge_level"].drop_nulls().value_counts()
    return {"suspects": int(df["suspect"].sum()), "judged_relevant": int(df["judge_relevant"].fill_null(False).sum()),
            "decided": {str(n): int(c) for n, c in levels.iter_rows()}}


def plan(worker: JudgeWorker, parts: list[Path]) -> dict:
    """What a run will ask: suspects, and for judge 1 the calls not in its cache with an estimate of their prompt
    tokens; later judges read only what earlier ones flag, so their counts are upper bounds."""
    suspects = calls = tokens = 0
    first = worker.levels[0]
    for part in parts:
        _, pairs = worker.suspects(part)
        convs, keys = worker.conversations(pairs)
        todo = first.lookup(keys)
        suspects += len(keys)
        calls += len(todo)
        tokens += sum(estimate_tokens(convs[i]) + 1 for i in todo)
    return {"suspects": suspects, "calls_1": calls, "cached_1": suspects - calls, "tokens_1": tokens}


def describe(p: dict, levels: list[Level]) -> list[str]:
    lines = [f"judge: {p['suspects']} suspects; judge 1 ({levels[0].label}): {p['calls_1']} calls "
             f"(~{p['tokens_1']:,} prompt tokens), {p['cached_1']} from the cache"]
    for n, level in enumerate(levels[1:], 2):
        lines.append(f"judge {n} ({level.label}): at most {p['suspects']} calls, only on what judge {n - 1} flags "
                     f"(threshold {levels[n - 2].spec.threshold})")
    return lines


def run(filtered_dir: Path, data_dir: Path, out: Path, cfg: JudgeConfig, overwrite: bool = False,
        cache: Path | None = None, use_cache: bool = True, execution: Execution = LOCAL, dry_run: bool = False,
        log=print, run_dir: Path | None = None) -> dict:
    """Judge the suspects of every part of `filtered_dir`; `cache` defaults to `default_cache(out, run_dir)`.
    `dry_run`: print (and return) the plan, write nothing."""
    require_finished(filtered_dir, "filter")
    data.load(data_dir, ())
    parts = finished_parts(filtered_dir, "filter")
    cache_dir = (Path(cache) if cache else default_cache(out, run_dir)).absolute() if use_cache else None
    mine = [p for n, p in enumerate(parts) if execution.owns(n)]
    if dry_run:
        worker = JudgeWorker(data_dir, cfg, cache_dir)
        p = plan(worker, mine)
        for line in describe(p, worker.levels):
            log(line)
        return {"stage": "judge", "status": "dry-run", "plan": p}
    with StageWriter(out, "judge", asdict(cfg), inputs=[filtered_dir, data_dir], overwrite=overwrite,
                     shard=execution.shard) as w:
        todo = [p for p in mine if not w.has(p.name)]
        spec = {"data_dir": Path(data_dir).absolute(), "cfg": cfg, "cache_dir": cache_dir}
        if todo:
            worker = JudgeWorker(**spec)
            for line in describe(plan(worker, todo), worker.levels):
                log(line)
        units = [(p.name, p.absolute()) for p in parts]
        stats = run_units(units, JudgeWorker, spec, w.out, save_table, execution, w.has, "judge: parts", w.record)
        names = [name for name, _ in units]
        if not w.claim_finish(names, stats):
            return w.shard_pending()
        counts = w.unit_totals(names, lambda path: part_stats(read_part(path, schemas.JUDGED)))
        summary = {"suspects": counts.get("suspects", 0), "judged_relevant": counts.get("judged_relevant", 0),
                   "judges": []}
        for n, s in enumerate(specs(cfg), 1):
            decided = counts.get("decided", {}).get(str(n), 0)
            summary["judges"].append({
                "judge": label(s), "threshold": s.threshold, "decided": decided,
                # of this run (a resumed run does not count the parts it found)
                **{k: w.shard_stats.get(f"{k}_{n}", 0) for k in ("judged", "calls", "flagged", "unparsed")}})
        summary["calls"] = sum(j["calls"] for j in summary["judges"])
        return w.finish(summary=summary, models={f"judge_{n}": label(s) for n, s in enumerate(specs(cfg), 1)})
