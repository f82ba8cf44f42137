"""Hidden-positive benchmark: how many emitted negatives are in fact relevant documents, per configuration.

    python bench/hidden_positive.py --data ../shared/data/nfcorpus --split test --seed 0 --negatives 5 \
        --out bench/results

Protocol (bench/protocol.py): every query of the split with >= 2 relevant documents keeps one seeded labeled
positive; the others are hidden (written to `hidden-qrels/<split>.tsv` of a BEIR copy that every configuration reads
with only the labeled positives). A kept negative that is a hidden positive (or an exact text copy of a relevant
document) is a false negative. Configurations, all in this run: naive top-k (dense, BM25), sentence-transformers'
`mine_hard_negatives(relative_margin=0.05)` with and without `cross_encoder` rescoring, and hardneg configs
(configs/<name>.toml if the repository has it, else bench/configs/<name>.toml, or a path ending in .toml), run through
the stage functions with stage directories shared between configs that agree up to that stage (so the corpus is
embedded once per index) and one teacher score cache (a row says how much of its scoring it took from there).
`--keep-rows OLD.json` keeps an earlier run's rows for the configurations not run now, each marked with its run.

No cross-encoder ships offline: one is trained here from the packaged MiniLM backbone on the TRAIN split's queries
(relevant vs random documents, seeded), cached in bench/.cache, and used by ST's rescoring and hardneg's
cross-encoder configs alike.

Hardness is measured with one yardstick for every configuration: the packaged all-MiniLM-L6-v2 cosine of a kept
negative divided by that of the labeled positive, and the negative's rank in MiniLM's exact ranking of the corpus.
Wall time: ST calls timed end to end; hardneg and naive configs as the sum of their stages' manifest wall times
(index, mine, score, filter, relabel; import excluded), i.e. what the config costs on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.protocol import (  # noqa: E402
    expand_duplicates, hide_positives, negative_metrics, read_beir, recovery_metrics)

ROOT = Path(__file__).resolve().parent.parent
HARDNEG_CONFIGS = ["default", "nv-retriever-percpos", "simans", "rlhn-relabel", "hybrid"]
CE_DIR = Path("bench/.cache/cross-encoder-nfcorpus-train")


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
    out.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl.gz", "corpus.jsonl", "queries.jsonl.gz", "queries.jsonl"):
        if (src / name).exists() and not (out / name).exists():
            (out / name).symlink_to((src / name).resolve())
    for sub, rows in (("qrels", [(q, d) for q, d in labeled.items()]),
                      ("hidden-qrels", [(q, d) for q in hidden for d in sorted(hidden[q])])):
        (out / sub).mkdir(exist_ok=True)
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
        (out / sub / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return out


def train_cross_encoder(src: Path, out: Path, steps: int, seed: int, max_length: int, batch: int = 16) -> Path:
    """MiniLM backbone + fresh head, BCE on TRAIN-split (query, relevant doc) = 1 vs (query, random doc) = 0."""
    meta = {"steps": steps, "seed": seed, "max_length": max_length, "batch": batch, "data": str(src.resolve())}
    if (out / "bench_meta.json").exists() and json.loads((out / "bench_meta.json").read_text()) == meta:
        return out
    import torch
    from sentence_transformers import CrossEncoder
    from tqdm.auto import tqdm

    from hardneg.models import resolve

    corpus, queries, qrels = read_beir(src, "train")
    doc_ids = sorted(corpus)
    pairs = [(q, d) for q in sorted(qrels) for d, r in sorted(qrels[q].items()) if r > 0 and q in queries]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    ce = CrossEncoder(resolve("all-MiniLM-L6-v2"), num_labels=1, max_length=max_length)
    model, tok = ce.model, ce.tokenizer
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    for _ in tqdm(range(steps), desc="training the benchmark cross-encoder", unit="step"):
        pos = rng.sample(pairs, batch // 2)
        neg = [(q, rng.choice(doc_ids)) for q, _ in pos]
        batch_pairs = [(queries[q], corpus[d]) for q, d in pos + neg]
        labels = torch.tensor([1.0] * len(pos) + [0.0] * len(neg))
        enc = tok([a for a, _ in batch_pairs], [b for _, b in batch_pairs], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits.view(-1), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ce.save(str(out))
    (out / "bench_meta.json").write_text(json.dumps(meta))
    return out


class Stages:
    """Stage directories keyed by (upstream key, stage, resolved config): configs that agree up to a stage share it."""

    def __init__(self, root: Path, data_dir: Path):
        self.root, self.data_dir = root, data_dir

    def _dir(self, parent: str, stage: str, cfg) -> tuple[Path, str]:
        blob = json.dumps([parent, stage, dataclasses.asdict(cfg)], sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return self.root / f"{stage}-{key}", key

    def _ensure(self, path: Path, fn) -> Path:
        if not (path / "_SUCCESS").exists():
            print(f"[bench] building {path.name}", flush=True)
            fn(path)
        return path

    def run(self, cfg, upto: str = "relabel") -> dict[str, Path]:
        from hardneg.stages import filter, index, mine, relabel, score

        out = {}
        p, k = self._dir("", "index", cfg.index)
        out["index"] = self._ensure(p, lambda o: index.run(self.data_dir, o, cfg.index))
        p, k = self._dir(k, "mine", cfg.mine)
        out["mine"] = self._ensure(p, lambda o: mine.run(out["index"], self.data_dir, o, cfg.mine))
        if upto == "mine":
            return out
        p, k = self._dir(k, "score", cfg.score)
        out["score"] = self._ensure(p, lambda o: score.run(out["mine"], self.data_dir, o, cfg.score))
        p, k = self._dir(k, "filter", cfg.filter)
        out["filter"] = self._ensure(p, lambda o: filter.run(out["score"], o, cfg.filter))
        p, k = self._dir(k, "relabel", cfg.relabel)
        out["relabel"] = self._ensure(p, lambda o: relabel.run(out["filter"], o, cfg.relabel))
        return out


def read_stage(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hardneg.io.stagedir import part_paths

    return pa.concat_tables([pq.read_table(p) for p in part_paths(path)]).to_pylist()


def wall(paths: dict[str, Path]) -> float:
    from hardneg.io.stagedir import read_manifest

    return sum(read_manifest(p).get("wall_seconds", 0.0) for p in paths.values())


def cached_share(score_dir: Path) -> float:
    """Share of a score stage's distinct pairs taken from the score cache rather than scored by its teacher."""
    from hardneg.io.stagedir import read_manifest

    summary = read_manifest(score_dir).get("summary", {})
    return summary.get("cached_pairs", 0) / summary["distinct_pairs"] if summary.get("distinct_pairs") else 0.0


class Yardstick:
    """MiniLM cosine and rank of every (query, document), from the dense index's cached corpus embeddings."""

    def __init__(self, index_dir: Path, queries: dict[str, str], qids: list[str], max_seq_length: int):
        import pyarrow.parquet as pq

        from hardneg.models import load_sentence_transformer

        emb = np.load(index_dir / "dense" / "embeddings.npy")
        doc_ids = pq.read_table(index_dir / "doc_ids.parquet")["doc_id"].to_pylist()
        model = load_sentence_transformer("all-MiniLM-L6-v2", None, max_seq_length, False)
        q = model.encode([queries[x] for x in qids], normalize_embeddings=True, convert_to_numpy=True)
        self.scores = q @ emb.T
        order = np.argsort(-self.scores, axis=1, kind="stable")
        self.ranks = np.empty_like(order)
        np.put_along_axis(self.ranks, order, np.arange(1, order.shape[1] + 1)[None, :].repeat(len(qids), 0), axis=1)
        self.qpos = {x: i for i, x in enumerate(qids)}
        self.dpos = {d: i for i, d in enumerate(doc_ids)}

    def hardness(self, negatives: dict[str, list[str]], labeled: dict[str, str]) -> dict:
        ratios, ranks = [], []
        for q, docs in negatives.items():
            i = self.qpos[q]
            p = self.scores[i, self.dpos[labeled[q]]]
            for d in docs:
                ratios.append(self.scores[i, self.dpos[d]] / p)
                ranks.append(self.ranks[i, self.dpos[d]])
        return {"score_vs_positive": float(np.mean(ratios)) if ratios else None,
                "mean_rank": float(np.mean(ranks)) if ranks else None}


def st_cache(max_seq_length: int) -> str:
    """ST's embedding cache (its key ignores max_seq_length, so one folder per length); shared with downstream.py."""
    return str(Path("bench/.cache") / f"st-embeddings-len{max_seq_length}")


def st_mine(corpus: dict, queries: dict, labeled: dict, negatives: int, max_seq_length: int, cross_encoder=None):
    """sentence-transformers' mine_hard_negatives(relative_margin=0.05), defaults otherwise except its embedding
    cache (`cache_folder`: the corpus is embedded by whichever ST call comes first); -> {qid: [doc_id]}."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from hardneg.models import resolve

    qids = sorted(labeled)
    by_query_text = {queries[q]: q for q in qids}
    by_doc_text: dict[str, str] = {}
    for d, text in corpus.items():
        by_doc_text.setdefault(text, d)
    start = time.perf_counter()
    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"))
    model.max_seq_length = max_seq_length
    ds = Dataset.from_dict({"query": [queries[q] for q in qids], "positive": [corpus[labeled[q]] for q in qids]})
    out = mine_hard_negatives(ds, model, corpus=list(corpus.values()), cross_encoder=cross_encoder,
                              relative_margin=0.05, num_negatives=negatives, verbose=True,
                              cache_folder=st_cache(max_seq_length))
    seconds = time.perf_counter() - start
    found: dict[str, list[str]] = {}
    for row in out:
        found.setdefault(by_query_text[row["query"]], []).append(by_doc_text[row["negative"]])
    return found, seconds


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
    ap.add_argument("--configs", default=",".join(HARDNEG_CONFIGS), help="hardneg configs, comma-separated")
    ap.add_argument("--ce-steps", type=int, default=60, help="training steps of the benchmark cross-encoder")
    ap.add_argument("--ce-max-length", type=int, default=96)
    ap.add_argument("--ce-queries", type=int, default=100, help="seeded subsample for the cross-encoder rows")
    ap.add_argument("--max-seq-length", type=int, default=64,
                    help="every encoder (indexes, teachers unless a config sets score.max_seq_length, ST, yardstick): "
                         "fits the shared 2-core CPU")
    ap.add_argument("--skip-st", action="store_true", help="leave out the two sentence-transformers rows")
    ap.add_argument("--keep-rows", type=Path, default=None,
                    help="an earlier hidden_positive.json: its rows for configurations not run now stay in the "
                         "table, each marked with the run that measured it")
    args = ap.parse_args(argv)
    args.run = {"command": "python bench/hidden_positive.py " + " ".join(argv or sys.argv[1:]),
                "started": time.strftime("%Y-%m-%d %H:%M"), "load_average": [round(x, 2) for x in os.getloadavg()]}
    args.earlier = earlier_rows(args.keep_rows, args) if args.keep_rows else ([], [])

    from hardneg.config import ImportConfig, IndexConfig, MineConfig, load_pipeline
    from hardneg.stages import import_

    corpus, queries, qrels = read_beir(args.data, args.split)
    labeled, hidden = hide_positives(qrels, args.seed)
    relevant = expand_duplicates({q: hidden[q] | {labeled[q]} for q in hidden}, corpus, labeled)
    print(f"[bench] {len(labeled)} queries with >= 2 relevant docs; {sum(map(len, hidden.values()))} hidden "
          f"positives ({sum(map(len, relevant.values()))} with exact-text copies)", flush=True)
    copy = write_hidden_copy(args.data, args.cache / f"hidden-{args.data.name}-{args.split}-seed{args.seed}",
                             args.split, labeled, hidden)
    data_dir = copy / "data"
    if not (data_dir / "_SUCCESS").exists():
        import_.run(copy, data_dir, ImportConfig(split=args.split))
    stages = Stages(args.cache / "stages" / copy.name, data_dir)
    rows = []

    def add(name: str, negatives: dict, seconds: float, promoted=None, candidates=None, note="", qset=None):
        qset = set(labeled) if qset is None else qset
        negatives = {q: v for q, v in negatives.items() if q in qset}
        row = {"configuration": name, "note": note, "wall_seconds": round(seconds, 1)}
        row.update(negative_metrics(negatives, {q: relevant[q] for q in sorted(qset)}, args.negatives))
        row.update(yard.hardness(negatives, labeled))
        if promoted is not None:
            row["recovery"] = recovery_metrics(promoted, candidates, relevant)
        rows.append(row)
        print(f"[bench] {name}: {json.dumps(row)}", flush=True)

    naive = {"dense": IndexConfig(retriever="dense"), "bm25": IndexConfig(retriever="bm25")}
    naive_paths = {}
    for name, icfg in naive.items():
        cfg = load_pipeline(config_path("default"))
        cfg = dataclasses.replace(cfg, index=dataclasses.replace(icfg, max_seq_length=args.max_seq_length),
                                  mine=MineConfig(top_k=args.negatives + 1))
        naive_paths[name] = stages.run(cfg, upto="mine")
    yard = Yardstick(naive_paths["dense"]["index"], queries, sorted(labeled), args.max_seq_length)
    for name, paths in naive_paths.items():
        negs: dict[str, list[str]] = {}
        for r in sorted(read_stage(paths["mine"]), key=lambda r: (r["query_id"], r["rank"] or 1 << 30)):
            if not r["is_positive"] and len(negs.setdefault(r["query_id"], [])) < args.negatives:
                negs[r["query_id"]].append(r["doc_id"])
        add(f"naive {name} top-{args.negatives}", negs, wall(paths), note="no filter")

    for name in [c for c in args.configs.split(",") if c]:
        path = config_path(name)
        cfg = load_pipeline(path)
        cfg = dataclasses.replace(
            cfg, import_=dataclasses.replace(cfg.import_, split=args.split),
            index=dataclasses.replace(cfg.index, max_seq_length=args.max_seq_length),
            score=dataclasses.replace(cfg.score, max_seq_length=cfg.score.max_seq_length or args.max_seq_length))
        paths = stages.run(cfg)
        negs, promoted, candidates = {}, {}, {}
        for r in read_stage(paths["relabel"]):
            q = r["query_id"]
            if not r["is_positive"]:
                candidates.setdefault(q, set()).add(r["doc_id"])
            if r["label"] == "negative":
                negs.setdefault(q, []).append(r["doc_id"])
            elif r["label"] == "positive" and r["label_source"] == "teacher":
                promoted.setdefault(q, set()).add(r["doc_id"])
        c = cfg.index
        length = f" at {cfg.score.max_seq_length} tokens" if cfg.score.max_seq_length != args.max_seq_length else ""
        note = (f"{c.retriever} top {cfg.mine.top_k}; teacher {cfg.score.teacher_kind} "
                f"{'bench-trained MiniLM CE' if cfg.score.teacher_kind == 'cross-encoder' else cfg.score.model}"
                f"{length}; "
                f"{'+'.join(cfg.filter.rules)} {cfg.filter.ratio if 'perc-pos' in cfg.filter.rules else ''} "
                f"vs {cfg.filter.positive_reference} positive; sampling {cfg.filter.sampling}")
        cached = cached_share(paths["score"])
        if cached:
            note += f"; {100 * cached:.0f}% of teacher pairs from the bench's score cache (not in wall s)"
        add(f"hardneg {Path(name).stem} ({shown(path)})", negs, wall(paths), promoted, candidates, note)

    if not args.skip_st:
        negs, secs = st_mine(corpus, queries, labeled, args.negatives, args.max_seq_length)
        add("ST mine_hard_negatives(relative_margin=0.05)", negs, secs, note="MiniLM retriever and scorer")
        save(rows, args, argv, len(labeled))
        from sentence_transformers import CrossEncoder

        ce_path = train_cross_encoder(args.data, CE_DIR, args.ce_steps, args.seed, args.ce_max_length)
        ce = CrossEncoder(str(ce_path), max_length=args.ce_max_length)
        sub = sorted(random.Random(args.seed).sample(sorted(labeled), min(args.ce_queries, len(labeled))))
        negs, secs = st_mine(corpus, queries, {q: labeled[q] for q in sub}, args.negatives, args.max_seq_length,
                             cross_encoder=ce)
        add("ST mine_hard_negatives(relative_margin=0.05, cross_encoder)", negs, secs, qset=set(sub),
            note=f"cross-encoder: MiniLM CE trained here ({args.ce_steps} steps on train); "
                 f"seeded subsample of {len(sub)} queries (CPU cost)")

    save(rows, args, argv, len(labeled))
    return rows


def earlier_rows(path: Path, args) -> tuple[list[dict], list[dict]]:
    """(rows, runs) of an earlier result file measured with the same protocol; rows without a run get run 1."""
    old = json.loads(Path(path).read_text())
    for key in ("split", "seed", "max_seq_length"):
        if old.get(key) != getattr(args, key):
            raise SystemExit(f"{path}: measured with {key} = {old.get(key)!r}, this run uses {getattr(args, key)!r}; "
                             f"rows of different protocols do not share a table")
    if old.get("negatives_requested") != args.negatives:
        raise SystemExit(f"{path}: measured with --negatives {old.get('negatives_requested')}, this run uses "
                         f"{args.negatives}")
    runs = old.get("runs") or [{"id": 1, "command": old.get("command")}]
    rows = [{**r, "run": r.get("run", 1)} for r in old["rows"]]
    return rows, runs


def save(rows, args, argv, n_queries):
    """Print and write the table and JSON (called after the cheap rows and again after the cross-encoder row).
    With --keep-rows, the earlier file's rows for configurations not run now are kept, in their place."""
    old_rows, old_runs = args.earlier
    run_id = max((r["id"] for r in old_runs), default=0) + 1
    new = {r["configuration"]: {**r, "run": run_id} for r in rows}
    merged = [new.pop(r["configuration"], r) for r in old_rows] + list(new.values())
    merged = sorted(merged, key=lambda r: ["naive", "ST", "hardneg"].index(r["configuration"].split()[0]))
    used = {r["run"] for r in merged}
    runs = [r for r in old_runs if r["id"] in used] + [{"id": run_id, **args.run}]
    table = render(merged, args, n_queries, runs)
    print(table, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hidden_positive.md").write_text(table)
    meta = {"command": args.run["command"], "split": args.split,
            "seed": args.seed, "max_seq_length": args.max_seq_length, "negatives_requested": args.negatives,
            "queries": n_queries,
            "cross_encoder": {"path": str(CE_DIR), "steps": args.ce_steps, "max_length": args.ce_max_length},
            "runs": runs, "rows": merged, "cross_encoder_queries": args.ce_queries}
    (args.out / "hidden_positive.json").write_text(json.dumps(meta, indent=2) + "\n")


def render(rows, args, n_queries, runs=()) -> str:
    head = ("| configuration | FN rate | queries with ≥1 FN | negatives / query (yield) | MiniLM score vs positive "
            "| mean MiniLM rank | relabel: promoted, precision, recall | wall s | run | notes |")
    lines = [f"Hidden-positive benchmark: {args.data.name} {args.split}, {n_queries} queries with ≥ 2 relevant "
             f"(one labeled, the rest hidden), seed {args.seed}, {args.negatives} negatives requested; every encoder "
             f"(retrievers, teachers unless a config sets its own, ST, yardstick) at max_seq_length "
             f"{args.max_seq_length}.", "",
             head, "|" + "---|" * 10]
    for r in rows:
        rec = r.get("recovery")
        rec_s = ("—" if rec is None
                 else f"{rec['promoted']}, {fmt(rec['precision'], True)}, {fmt(rec['recall'], True)}")
        lines.append(
            f"| {r['configuration']} | {fmt(r['fn_rate'], True)} | {fmt(r['queries_with_fn'], True)} "
            f"| {r['negatives_per_query']:.2f} ({fmt(r['yield'], True)}) | {fmt(r['score_vs_positive'])} "
            f"| {fmt(r['mean_rank'], nd=0)} | {rec_s} | {r['wall_seconds']:.0f} | {r.get('run', '—')} "
            f"| {r['note']} |")
    if runs:
        lines.append("")
        for run in runs:
            when = f" ({run['started']}, load average {run['load_average'][0]:.1f})" if run.get("started") else ""
            lines.append(f"Run {run['id']}{when}: `{run['command']}`  ")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
