"""Hidden-positive benchmark: judge the training file each configuration gives a user, negatives and positives.

    python bench/hidden_positive.py --data ../shared/data/nfcorpus --out bench/results
    python bench/hidden_positive.py --data ../shared/data/scifact --out bench/results

Protocol (bench/protocol.py): every test query with >= 2 relevant documents keeps one seeded labeled positive; the
others are hidden (a BEIR copy whose qrels hold only the labeled positives). Each configuration sees only that copy.

Every hardneg row is a config file run exactly as `hardneg run DATA --config FILE` runs it (configs/<name>.toml when
the repository ships it, else bench/configs/<name>.toml, or a .toml path): no option is overridden here, so a capped
or otherwise altered variant is a file of its own. The stages are run through the same stage functions as `hardneg
run`, in directories keyed by (upstream, stage, resolved config) so that configurations agreeing up to a stage share
it. Naive top-k rows are configs too (bench/configs/naive-*.toml). sentence-transformers rows call
`mine_hard_negatives` with the packaged MiniLM at its own length.

Each row is judged on its exported training file, mapped back to ids by text (an exact copy of a relevant document
is relevant): false negatives among the distinct (query, negative) pairs and queries with one; yield; positive
precision (distinct (query, positive) pairs relevant by the full qrels; promoted ones separately, with their recall
of the hidden positives the pipeline saw); training rows whose positive is wrong; hardness (the retriever's median
rank of kept negatives and the teacher's median score minus the labeled positive's, and for every row one yardstick:
MiniLM's exact rank and its cosine relative to the positive); teacher pairs scored; wall time (the sum of the stages'
manifest times, import excluded).

`--curves` adds the precision/recall of promotion against a threshold (teacher score minus the best positive's) for
each teacher the run scored with, and of evidence that combines signals (teacher and retriever agree; a cap of one
per query); results in `hidden_positive-<data>.json`, tables in bench/README.md (bench/tables.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.benchutil import read_beir, write_beir  # noqa: E402
from bench.protocol import hide_positives  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HARDNEG_CONFIGS = ["naive-dense", "naive-bm25", "default", "mpnet-teacher", "nv-retriever-percpos", "simans",
                   "rlhn-relabel", "bm25-fast"]
ST_ROWS = ["st-default", "st-margin", "st-recipe"]


def config_path(name: str) -> Path:
    """A name -> configs/<name>.toml if the repository has it, else bench/configs/<name>.toml; a .toml path as is."""
    if name.endswith(".toml"):
        return Path(name).resolve()
    repo = ROOT / "configs" / f"{name}.toml"
    return repo if repo.exists() else ROOT / "bench" / "configs" / f"{name}.toml"


def shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_hidden_copy(src: Path, out: Path, split: str, labeled: dict, hidden: dict) -> Path:
    """BEIR copy: corpus and queries linked, qrels/<split>.tsv = labeled positives, hidden-qrels/<split>.tsv."""
    return write_beir(out, split, list(labeled.items()), src=src,
                      extra_qrels={"hidden-qrels": [(q, d) for q in hidden for d in sorted(hidden[q])]})


class Stages:
    """Stage directories keyed by (upstream key, stage, resolved config): configs that agree up to a stage share it.
    Each stage runs through the same function `hardneg run` calls, with the config exactly as loaded."""

    def __init__(self, root: Path, data_dir: Path):
        self.root, self.data_dir = root, data_dir

    def _dir(self, parent: str, stage: str, *cfgs) -> tuple[Path, str]:
        blob = json.dumps([parent, stage, *map(dataclasses.asdict, cfgs)], sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return self.root / f"{stage}-{key}", key

    def _ensure(self, path: Path, fn, done: Path | None = None) -> Path:
        if not (done or path / "_SUCCESS").exists():
            print(f"[bench] building {path.name}", flush=True)
            fn(path)
        return path

    def run(self, cfg, upto: str = "export") -> dict[str, Path]:
        from hardneg.stages import export, filter, index, mine, relabel, score

        out = {}
        p, k = self._dir("", "index", cfg.index)
        out["index"] = self._ensure(p, lambda o: index.run(self.data_dir, o, cfg.index))
        p, k = self._dir(k, "mine", cfg.mine)
        out["mine"] = self._ensure(p, lambda o: mine.run(out["index"], self.data_dir, o, cfg.mine))
        if upto == "mine":
            return out
        # as `hardneg run` calls it: adaptive depth stops on the filter's rules (so they are part of the key)
        p, k = self._dir(k, "score", cfg.score, cfg.filter, cfg.relabel)
        out["score"] = self._ensure(p, lambda o: score.run(out["mine"], self.data_dir, o, cfg.score,
                                                           filter_cfg=cfg.filter, relabel_cfg=cfg.relabel))
        p, k = self._dir(k, "filter", cfg.filter)
        out["filter"] = self._ensure(p, lambda o: filter.run(out["score"], o, cfg.filter))
        p, k = self._dir(k, "relabel", cfg.relabel)
        out["relabel"] = self._ensure(p, lambda o: relabel.run(out["filter"], o, cfg.relabel))
        if upto == "relabel":
            return out
        p, k = self._dir(k, "export", cfg.export)
        ext = ".jsonl" if cfg.export.format == "flagembedding" else ".parquet"
        train = p / f"train{ext}"
        self._ensure(p, lambda o: (o.mkdir(parents=True, exist_ok=True),
                                   export.run(out["relabel"], self.data_dir, train, cfg.export, overwrite=True)),
                     done=Path(f"{train}.manifest.json"))
        out["export"] = train
        return out


def read_stage(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hardneg.io.stagedir import part_paths

    return pa.concat_tables([pq.read_table(p) for p in part_paths(path)]).to_pylist()


def wall(paths: dict[str, Path]) -> float:
    from hardneg.io.stagedir import read_manifest

    return sum(read_manifest(p).get("wall_seconds", 0.0) for s, p in paths.items() if s != "export")


# -- judging a training file -------------------------------------------------------------------------------------

def training_rows(path: Path, fmt: str) -> list[tuple[str, str | None, list[str]]]:
    """(query text, positive text or None, negative texts) per row of a training file in any export format."""
    import polars as pl

    df = pl.read_parquet(path) if str(path).endswith(".parquet") else pl.read_ndjson(path)
    rows = []
    cols = df.columns
    for r in df.iter_rows(named=True):
        if "anchor" in cols:  # triplets, n-tuple (with or without scores)
            negs = [r[c] for c in cols if c == "negative" or c.startswith("negative_")]
            rows.append((r["anchor"], r["positive"], [n for n in negs if n is not None]))
        elif "pos" in cols:  # flagembedding
            for p in r["pos"]:
                rows.append((r["query"], p, list(r["neg"])))
        elif "label" in cols and "document" in cols:  # labeled
            rows.append((r["query"], r["document"] if r["label"] else None, [] if r["label"] else [r["document"]]))
        elif "positive" in cols and "negative" in cols:  # margin-mse
            rows.append((r["query"], r["positive"], [r["negative"]]))
        else:
            raise SystemExit(f"{path}: unknown training-file columns {cols}")
    return rows


class Truth:
    """The protocol's truth in text space: a document is relevant to a query when its text is that of a relevant
    document (an exact copy of a relevant document is relevant too)."""

    def __init__(self, data_dir: Path, queries: dict[str, str], labeled: dict[str, str], relevant: dict[str, set]):
        from hardneg.io import data

        corpus = data.load(data_dir, ("corpus",))["corpus"]
        self.text = dict(zip(corpus["doc_id"].to_pylist(), data.document_texts(corpus)))
        self.qid = {queries[q]: q for q in labeled}
        self.labeled_text = {q: self.text[d] for q, d in labeled.items()}
        self.relevant_text = {q: {self.text[d] for d in relevant[q] | {labeled[q]} if d in self.text}
                              for q in labeled}
        self.queries = sorted(labeled)


def judge(truth: Truth, rows: list[tuple[str, str | None, list[str]]], requested: int) -> dict:
    """False negatives, yield, positive precision and wrong-positive rows of one training file."""
    negs: dict[str, dict[str, None]] = {}
    pos: dict[str, set[str]] = {}
    n_rows = wrong_rows = 0
    for qtext, ptext, ntexts in rows:
        q = truth.qid.get(qtext)
        if q is None:
            continue
        n_rows += 1
        if ptext is not None:
            pos.setdefault(q, set()).add(ptext)
            wrong_rows += ptext not in truth.relevant_text[q]
        for t in ntexts:
            negs.setdefault(q, {})[t] = None
    qs = truth.queries
    emitted = sum(len(negs.get(q, ())) for q in qs)
    fns = [sum(t in truth.relevant_text[q] for t in negs.get(q, ())) for q in qs]
    pairs = [(q, t) for q in qs for t in pos.get(q, ())]
    promoted = [(q, t) for q, t in pairs if t != truth.labeled_text[q]]
    right = sum(t in truth.relevant_text[q] for q, t in pairs)
    right_promoted = sum(t in truth.relevant_text[q] for q, t in promoted)
    per_query = emitted / len(qs)
    return {
        "queries": len(qs),
        "negatives": emitted,
        "false_negatives": sum(fns),
        "fn_rate": sum(fns) / emitted if emitted else 0.0,
        "queries_with_fn": sum(f > 0 for f in fns) / len(qs),
        "queries_without_negatives": sum(1 for q in qs if not negs.get(q)),
        "negatives_per_query": per_query,
        "yield": per_query / requested,
        "positive_pairs": len(pairs),
        "positive_precision": right / len(pairs) if pairs else None,
        "promoted_pairs": len(promoted),
        "promoted_precision": right_promoted / len(promoted) if promoted else None,
        "training_rows": n_rows,
        "wrong_positive_rows": wrong_rows / n_rows if n_rows else 0.0,
        "_negatives": {q: list(v) for q, v in negs.items()},
    }


def promoted_recall(relabeled: list[dict], labeled: dict, relevant: dict) -> float | None:
    """Promoted hidden positives / hidden positives among the candidates the pipeline mined."""
    seen, hits = 0, 0
    for r in relabeled:
        q = r["query_id"]
        if q in relevant and not r["is_positive"] and r["doc_id"] in relevant[q]:
            seen += 1
            hits += r["label"] == "positive"
    return hits / seen if seen else None


def pipeline_hardness(relabeled: list[dict], labeled: dict) -> dict:
    """Median retriever rank of kept negatives; median teacher score minus the labeled positive's."""
    pos = {r["query_id"]: r["teacher_score"] for r in relabeled if r["is_positive"]
           and labeled.get(r["query_id"]) == r["doc_id"]}
    kept = [r for r in relabeled if r["label"] == "negative" and r["query_id"] in labeled]
    ranks = [r["rank"] for r in kept if r["rank"] is not None]
    margins = [r["teacher_score"] - pos[r["query_id"]] for r in kept
               if r["teacher_score"] is not None and pos.get(r["query_id"]) is not None]
    return {"median_rank": float(np.median(ranks)) if ranks else None,
            "median_teacher_margin": float(np.median(margins)) if margins else None}


class Yardstick:
    """One ruler for every row: packaged MiniLM cosine of (query, document) at its own length, and MiniLM's exact
    rank, from a dense index's cached corpus and query embeddings."""

    def __init__(self, index_dir: Path, truth: Truth, queries: dict[str, str]):
        from hardneg.retrievers.dense import load_embeddings, load_query_embeddings

        doc_ids, emb, _ = load_embeddings(index_dir)
        emb = np.array(emb)  # read whole, as before (the reader maps it)
        qtexts, qemb = load_query_embeddings(index_dir)
        row = {t: i for i, t in enumerate(qtexts)}
        qids = truth.queries
        q = np.stack([qemb[row[queries[x]]] for x in qids])
        self.scores = q @ emb.T
        order = np.argsort(-self.scores, axis=1, kind="stable")
        self.ranks = np.empty_like(order)
        np.put_along_axis(self.ranks, order, np.arange(1, order.shape[1] + 1)[None, :].repeat(len(qids), 0), axis=1)
        self.qpos = {x: i for i, x in enumerate(qids)}
        self.tpos = {}
        for i, d in enumerate(doc_ids):
            self.tpos.setdefault(truth.text[d], i)
        self.truth = truth

    def hardness(self, negatives: dict[str, list[str]]) -> dict:
        ratios, ranks = [], []
        for q, texts in negatives.items():
            i = self.qpos[q]
            p = self.scores[i, self.tpos[self.truth.labeled_text[q]]]
            for t in texts:
                j = self.tpos[t]
                ratios.append(self.scores[i, j] / p)
                ranks.append(self.ranks[i, j])
        return {"yard_score_vs_positive": float(np.median(ratios)) if ratios else None,
                "yard_median_rank": float(np.median(ranks)) if ranks else None}


# -- sentence-transformers rows -----------------------------------------------------------------------------------

ST_KWARGS = {
    "st-default": {},
    "st-margin": {"relative_margin": 0.05},
    "st-recipe": {"range_min": 10, "range_max": 50, "max_score": 0.8, "relative_margin": 0.05,
                  "sampling_strategy": "random"},
}


def st_mine(truth: Truth, corpus_texts: list[str], queries: dict, labeled: dict, negatives: int, kwargs: dict,
            cache: Path, cross_encoder=None):
    """sentence-transformers' mine_hard_negatives with the packaged MiniLM at its own length, `num_negatives` =
    the requested negatives, `kwargs`; its embedding cache under `cache`. -> (training rows, seconds)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from hardneg.models import resolve

    qids = sorted(labeled)
    start = time.perf_counter()
    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"))
    ds = Dataset.from_dict({"query": [queries[q] for q in qids],
                            "positive": [truth.labeled_text[q] for q in qids]})
    out = mine_hard_negatives(ds, model, corpus=corpus_texts, cross_encoder=cross_encoder, num_negatives=negatives,
                              verbose=True, cache_folder=str(cache / "st-embeddings"), **kwargs)
    seconds = time.perf_counter() - start
    return [(r["query"], r["positive"], [r["negative"]]) for r in out], seconds


# -- promotion curves ---------------------------------------------------------------------------------------------

def promotion_curve(scored: list[dict], relevant: dict, evidence: str = "teacher",
                    thresholds=None) -> list[dict]:
    """Precision / recall of promoting a candidate whose teacher score minus the query's best positive score is
    >= t, for each t; `evidence`: `teacher` alone, `teacher+rank10` (also in the retriever's top 10), `top1` (only
    the best such candidate of a query)."""
    best: dict[str, float] = {}
    for r in scored:
        if r["is_positive"] and r["teacher_score"] is not None:
            best[r["query_id"]] = max(best.get(r["query_id"], -1e9), r["teacher_score"])
    cands = [(r["query_id"], r["teacher_score"] - best[r["query_id"]], r["rank"], r["doc_id"] in relevant[r["query_id"]])
             for r in scored if not r["is_positive"] and r["query_id"] in relevant and r["query_id"] in best
             and r["teacher_score"] is not None]
    reachable = sum(c[3] for c in cands)
    if thresholds is None:
        thresholds = [round(x, 3) for x in np.arange(-0.10, 0.201, 0.02)]
    out = []
    for t in thresholds:
        chosen = [c for c in cands if c[1] >= t and (evidence != "teacher+rank10" or (c[2] or 1 << 30) <= 10)]
        if evidence == "top1":
            top: dict[str, tuple] = {}
            for c in chosen:
                if c[0] not in top or c[1] > top[c[0]][1]:
                    top[c[0]] = c
            chosen = list(top.values())
        hits = sum(c[3] for c in chosen)
        out.append({"threshold": t, "promoted": len(chosen), "precision": hits / len(chosen) if chosen else None,
                    "recall": hits / reachable if reachable else None})
    return out


def agreement(a: list[dict], b: list[dict]) -> list[dict]:
    """Rows of the pairs both teachers scored, with teacher_score = the smaller of the two margins over each
    teacher's best positive (so `promotion_curve` on it promotes only where both teachers reach t)."""
    def margins(rows):
        best: dict[str, float] = {}
        for r in rows:
            if r["is_positive"] and r["teacher_score"] is not None:
                best[r["query_id"]] = max(best.get(r["query_id"], -1e9), r["teacher_score"])
        return {(r["query_id"], r["doc_id"]): (r, r["teacher_score"] - best[r["query_id"]]) for r in rows
                if r["query_id"] in best and r["teacher_score"] is not None}

    ma, mb = margins(a), margins(b)
    out = []
    for key in ma.keys() & mb.keys():
        r, m = ma[key]
        # positives keep margin 0 (their own best is 0 or below), candidates the smaller margin
        out.append({**r, "teacher_score": 0.0 if r["is_positive"] else min(m, mb[key][1])})
    return out


def fmt(x, pct=False, nd=2):
    if x is None:
        return "—"
    return f"{100 * x:.1f}%" if pct else f"{x:.{nd}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="BEIR directory (e.g. ../shared/data/nfcorpus)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--cache", type=Path, default=Path("bench/.cache"))
    ap.add_argument("--configs", default=",".join(HARDNEG_CONFIGS),
                    help="hardneg configs, comma-separated (names or .toml paths); mpnet-teacher is skipped when "
                         "all-mpnet-base-v2 is not prepared")
    ap.add_argument("--st", default=",".join(ST_ROWS), help=f"sentence-transformers rows: {', '.join(ST_ROWS)}")
    ap.add_argument("--curves", action="store_true", help="promotion precision/recall curves per teacher")
    args = ap.parse_args(argv)
    started = time.time()
    run_info = {"command": "python bench/hidden_positive.py " + " ".join(argv or sys.argv[1:]),
                "started": time.strftime("%Y-%m-%d %H:%M")}

    from hardneg.config import ImportConfig, load_pipeline
    from hardneg.io import data
    from hardneg.models import resolve
    from hardneg.stages import import_

    corpus, queries, qrels = read_beir(args.data, args.split)
    labeled, hidden = hide_positives(qrels, args.seed)
    relevant = {q: hidden[q] | {labeled[q]} for q in hidden}
    copy = write_hidden_copy(args.data, args.cache / f"hidden-{args.data.name}-{args.split}-seed{args.seed}",
                             args.split, labeled, hidden)
    data_dir = copy / "data"
    if not (data_dir / "_SUCCESS").exists():
        import_.run(copy, data_dir, ImportConfig(split=args.split))
    truth = Truth(data_dir, queries, labeled, relevant)
    print(f"[bench] {len(labeled)} queries with >= 2 relevant docs; {sum(map(len, hidden.values()))} hidden "
          f"positives", flush=True)
    stages = Stages(args.cache / "stages" / copy.name, data_dir)
    rows, curves, teachers = [], {}, {}

    negatives_of = {}  # configuration -> its negatives, for the yardstick once a dense index exists

    def add(name: str, kind: str, train_rows, seconds: float, note: str, extra: dict | None = None):
        res = judge(truth, train_rows, args.negatives)
        negatives_of[name] = res.pop("_negatives")
        row = {"configuration": name, "kind": kind, "note": note, "wall_seconds": round(seconds, 1), **res,
               **(extra or {})}
        rows.append(row)
        print(f"[bench] {name}: {json.dumps(row)}", flush=True)

    from hardneg.io.stagedir import read_manifest

    dense_index = None  # the yardstick reads the first dense index of MiniLM at its own length (queries cached)

    for name in [c for c in args.configs.split(",") if c]:
        path = config_path(name)
        cfg = load_pipeline(path)
        try:
            resolve(cfg.score.model)
        except Exception as exc:  # noqa: BLE001 - a teacher that is not prepared on this machine
            print(f"[bench] skipping {name}: {exc}", flush=True)
            continue
        paths = stages.run(cfg)
        if (dense_index is None and (paths["index"] / "dense" / "queries.npy").exists()
                and Path(cfg.index.model).name == "all-MiniLM-L6-v2" and not cfg.index.max_seq_length):
            dense_index = paths["index"]
        relabeled = read_stage(paths["relabel"])
        score_summary = read_manifest(paths["score"]).get("summary", {})
        extra = {"promoted_recall": promoted_recall(relabeled, labeled, relevant),
                 **pipeline_hardness(relabeled, labeled),
                 "teacher_pairs": score_summary.get("distinct_pairs"), "config": shown(path)}
        c = cfg
        note = (f"{c.index.retriever} top {c.mine.top_k}; teacher {c.score.teacher_kind} {Path(c.score.model).name}; "
                f"{'+'.join(c.filter.rules) or 'no rule'}; {c.filter.sampling}; relabel "
                f"{'drop' if not c.relabel.promote else c.relabel.policy}; {c.export.format}")
        add(f"hardneg {Path(name).stem}", "hardneg", training_rows(paths["export"], cfg.export.format), wall(paths),
            note, extra)
        if args.curves and cfg.filter.rules:
            key = f"{c.score.teacher_kind} {Path(c.score.model).name} (top {c.mine.top_k})"
            if key not in curves:
                scored = read_stage(paths["score"])
                teachers[key] = scored
                curves[key] = {ev: promotion_curve(scored, relevant, ev)
                               for ev in ("teacher", "teacher+rank10", "top1")}
    if len(teachers) > 1:  # two different teachers agree: both margins over their best positive >= t
        keys = sorted(teachers)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if a.split(" (")[0] != b.split(" (")[0]:
                    curves[f"{a} and {b} agree"] = {"both": promotion_curve(
                        agreement(teachers[a], teachers[b]), relevant, "teacher")}

    st_names = [s for s in args.st.split(",") if s]
    if st_names:
        c = data.load(data_dir, ("corpus",))["corpus"]
        corpus_texts = data.document_texts(c)
        for name in st_names:
            train_rows, secs = st_mine(truth, corpus_texts, queries, labeled, args.negatives, ST_KWARGS[name],
                                       args.cache)
            add(f"ST {name}", "st", train_rows, secs,
                "mine_hard_negatives(" + ", ".join(f"{k}={v!r}" for k, v in ST_KWARGS[name].items()) + ")")
    if dense_index is None:  # no config built one: the naive dense config's index
        dense_index = stages.run(load_pipeline(config_path("naive-dense")), upto="mine")["index"]
    yard = Yardstick(dense_index, truth, queries)
    for row in rows:
        row.update(yard.hardness(negatives_of[row["configuration"]]))
    save(rows, curves, args, run_info, len(labeled), time.time() - started)
    return rows


def save(rows, curves, args, run_info, n_queries, seconds):
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {**run_info, "data": args.data.name, "split": args.split, "seed": args.seed,
            "negatives_requested": args.negatives, "queries": n_queries, "bench_seconds": round(seconds),
            "rows": rows, "promotion_curves": curves}
    path = args.out / f"hidden_positive-{args.data.name}.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    print(render(meta), flush=True)
    print(f"[bench] wrote {path}", flush=True)


def render(meta: dict) -> str:
    """The Markdown table of one result file (bench/tables.py puts it in bench/README.md)."""
    lines = [f"{meta['data']} {meta['split']}: {meta['queries']} queries with ≥ 2 relevant documents (one labeled, "
             f"the rest hidden), seed {meta['seed']}, {meta['negatives_requested']} negatives requested. "
             f"`{meta['command']}` ({meta['started']}).", "",
             "| configuration | FN rate | queries with FN | negatives / query (yield) | queries without | positive "
             "precision | promoted: pairs, precision, recall | rows with a wrong positive | median rank (retriever "
             "/ MiniLM) | teacher s − p | MiniLM s/p | teacher pairs | wall s |",
             "|" + "---|" * 13]
    for r in meta["rows"]:
        promo = ("—" if not r.get("promoted_pairs") else
                 f"{r['promoted_pairs']}, {fmt(r['promoted_precision'], True)}, {fmt(r.get('promoted_recall'), True)}")
        rank = f"{fmt(r.get('median_rank'), nd=0)} / {fmt(r.get('yard_median_rank'), nd=0)}"
        lines.append(
            f"| {r['configuration']} | {fmt(r['fn_rate'], True)} | {fmt(r['queries_with_fn'], True)} "
            f"| {r['negatives_per_query']:.2f} ({fmt(r['yield'], True)}) | {r['queries_without_negatives']} "
            f"| {fmt(r['positive_precision'], True)} | {promo} | {fmt(r['wrong_positive_rows'], True)} | {rank} "
            f"| {fmt(r.get('median_teacher_margin'), nd=3)} | {fmt(r.get('yard_score_vs_positive'))} "
            f"| {r.get('teacher_pairs') or '—'} | {r['wall_seconds']:.0f} |")
    for teacher, by_ev in meta.get("promotion_curves", {}).items():
        lines += ["", f"Promotion against the threshold t on teacher score − best positive score, {teacher}: "
                      "promoted, precision, recall of the hidden positives among the candidates.", "",
                  "| t | " + " | ".join(by_ev) + " |", "|---|" + "---|" * len(by_ev)]
        for i, point in enumerate(next(iter(by_ev.values()))):
            cells = [f"{p[i]['promoted']}, {fmt(p[i]['precision'], True)}, {fmt(p[i]['recall'], True)}"
                     for p in by_ev.values()]
            lines.append(f"| {point['threshold']:+.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
