"""Downstream benchmark: does a model fine-tuned on hardneg's training file beat one trained on the alternatives?

    python bench/downstream.py --data-root ../shared/data                  # the core run (resumes from bench/.cache)
    python bench/downstream.py --data-root ../shared/data --quick          # smoke: SciFact, 3 rows, 1 seed, minutes
    python bench/downstream.py --report-only                               # table + plot from the JSON

The core run is the 8 rows of PRIORITY (base, in-batch, hardneg-default, the sentence-transformers miners, naive,
random) at 3 seeds with the kept setting (40 steps of 32, lr 2e-5, 64 tokens, MNRL); `--rows` adds the hardneg
variants and the other shipped configs (bench/README.md, "Downstream", has the full list).

Protocol (per data set, NFCorpus and SciFact, BEIR layout under --data-root):
* Training data: the TRAIN split, every train query with a relevant document. Each query keeps ONE labeled positive
  (a seeded choice, protocol seed 0, the same for every row and training seed) and the rest of its train qrels are
  hidden, as in the hidden-positive protocol. Every miner sees only the labeled positives; a negative it emits that
  is relevant by the FULL train qrels (or has the text of such a document) is a false negative, and a training
  positive that is not relevant by them (a relabel promotion) is a wrong positive.
* Rows (training files): `in-batch` (query, labeled positive); `random` (5 random non-positive documents);
  `naive` (dense top-5 non-positives of the base model, sentence-transformers' miner without rules);
  `st-default`, `st-margin` (relative_margin 0.05), `st-recipe` (its documented recipe: range 10-50, max_score
  0.8, relative_margin 0.05, 5 negatives, random sampling) from `sentence_transformers.util.mine_hard_negatives`;
  `hardneg-NAME` = `hardneg run DATA_DIR --out RUN --config configs/NAME.toml` exactly (bench/configs/NAME.toml
  for the bench variants), on a `hardneg import` of the hidden-positive train split. The miners use the base model at
  its own length (256 tokens), as a user would.
* Training: all-MiniLM-L6-v2 (packaged) + MultipleNegativesRankingLoss, the same budget for every row: --steps
  steps of --batch-size rows; an epoch visits every query of the file once (seeded order), with one of its rows
  (positive, negative) drawn at random, so a query never repeats in a batch and a query with many rows does not
  dominate; AdamW, --lr, linear warm-up over 10% then linear decay; --max-seq-length tokens for training and
  evaluation. Seeds (--seeds) vary the order, the draws and the torch state.
* Evaluation: the TEST split over the full corpus, exact cosine, nDCG@10 and Recall@100 (bench/protocol.py).
* Cache: bench/.cache/downstream/<data set>/ holds the hidden-positive copy and its import, each hardneg run
  (keyed by the config file's content), each training file (ids, metrics) and each model's evaluation (keyed by the
  row, its training file's key, the seed and the training settings): a killed run resumes where it stopped. A row
  whose training file has the very same rows as one evaluated already (a variant promoted to the default, a config
  renamed) reuses that evaluation: training depends on nothing else.

Results: bench/results/downstream.json ({"runs": [...], "files": [...]}), bench/results/downstream.md and the
table between the downstream markers of bench/README.md, bench/results/downstream.png (nDCG@10 against the training
file's false-negative rate and hardness, one point per row).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.benchutil import read_beir, write_beir
from bench.protocol import hide_positives, ndcg_recall

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_SEED = 0
MINER_LENGTH = 256  # the base model's own max_seq_length: what a user mining with it gets
BEGIN, END = "<!-- downstream:begin -->", "<!-- downstream:end -->"
# Whether the hardneg this process started with has score's reuse of the index embeddings (checked once, at start:
# a worker that started without it never mixes modules from before and after a merge; restart it after merging)
SCORE_REUSE = importlib.util.find_spec("hardneg.teachers.embeddings") is not None

# row -> keyword arguments of sentence_transformers.util.mine_hard_negatives (besides data, model, corpus)
ST_ROWS = {
    "naive": {"num_negatives": 5, "range_min": 0, "sampling_strategy": "top"},
    "st-default": {},
    "st-margin": {"relative_margin": 0.05},
    "st-recipe": {"range_min": 10, "range_max": 50, "max_score": 0.8, "relative_margin": 0.05, "num_negatives": 5,
                  "sampling_strategy": "random"},
}
PRIORITY = ["base", "in-batch", "hardneg-default", "naive", "st-default", "st-recipe", "st-margin", "random"]


class NotYet(Exception):
    """A job that cannot run now (another process holds its miner's lock; the installed hardneg lacks what the row
    needs): deferred to a later pass."""


def log(msg: str) -> None:
    print(f"[downstream {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def config_path(name: str) -> Path:
    """hardneg-NAME -> configs/NAME.toml (shipped) or bench/configs/NAME.toml (a bench variant)."""
    for base in (ROOT / "configs", ROOT / "bench" / "configs"):
        if (base / f"{name}.toml").exists():
            return base / f"{name}.toml"
    raise SystemExit(f"no configs/{name}.toml or bench/configs/{name}.toml")


class Dataset:
    """One BEIR data set: texts, the hidden-positive protocol on its train split, its test qrels, its cache."""

    def __init__(self, src: Path, cache: Path, quick: bool):
        self.name = src.name
        self.src = src
        self.corpus, self.queries, self.train_qrels = read_beir(src, "train")
        _, _, self.test_qrels = read_beir(src, "test")
        relevant = {q: r for q, r in self.train_qrels.items() if q in self.queries and any(v > 0 for v in r.values())}
        self.labeled, self.hidden = hide_positives(relevant, PROTOCOL_SEED, min_relevant=1)
        self.doc_ids = list(self.corpus)
        self.eval_doc_ids = self.doc_ids
        if quick:  # a smaller corpus to evaluate on: the test-relevant documents and 1,000 others
            rel = {d for r in self.test_qrels.values() for d, v in r.items() if v > 0}
            others = sorted(set(self.doc_ids) - rel)
            self.eval_doc_ids = sorted(rel & set(self.corpus)) + random.Random(0).sample(others, 1000)
        self.by_text: dict[str, list[str]] = {}
        for d, text in self.corpus.items():
            self.by_text.setdefault(text, []).append(d)
        self.cache = cache / self.name
        self.cache.mkdir(parents=True, exist_ok=True)

    def relevant_train(self, qid: str) -> set[str]:
        """Every document relevant to qid by the full train qrels, with the documents of identical text."""
        docs = {d for d, r in self.train_qrels.get(qid, {}).items() if r > 0 and d in self.corpus}
        return {twin for d in docs for twin in self.by_text[self.corpus[d]]}


# ---------------------------------------------------------------- models


def load_model(max_seq_length: int):
    from sentence_transformers import SentenceTransformer

    from hardneg.models import resolve

    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str], desc: str) -> np.ndarray:
    log(f"encoding {len(texts)} {desc}")
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=True)


def evaluate(model, ds: Dataset) -> dict:
    qids = [q for q in ds.test_qrels if q in ds.queries and any(v > 0 for v in ds.test_qrels[q].values())]
    d = encode(model, [ds.corpus[x] for x in ds.eval_doc_ids], f"{ds.name} documents")
    q = encode(model, [ds.queries[x] for x in qids], f"{ds.name} test queries")
    scores = q @ d.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    run = {qid: [ds.eval_doc_ids[j] for j in top[i]] for i, qid in enumerate(qids)}
    m = ndcg_recall(run, {x: ds.test_qrels[x] for x in qids})
    return {"ndcg_at_10": m["ndcg@10"], "recall_at_100": m["recall@100"], "test_queries": len(qids)}, d


def batches(qids: list[str], steps: int, batch_size: int, rng: random.Random):
    """`steps` batches of query ids: epochs of every query once in a seeded order; the rest of an epoch that does not
    fill a batch goes first, and the next epoch's copies of those queries go to its end (no query twice in a batch,
    none skipped). Lazy, so a caller drawing from the same `rng` between batches keeps one reproducible stream."""
    queue: list[str] = []
    for _ in range(steps):
        if len(queue) < batch_size:
            nxt = qids[:]
            rng.shuffle(nxt)
            pending = set(queue)
            queue += [q for q in nxt if q not in pending] + [q for q in nxt if q in pending]
        batch, queue = queue[:batch_size], queue[batch_size:]
        yield batch


def train(model, rows: dict[str, list[list[str]]], ds: Dataset, args, seed: int):
    """MultipleNegativesRankingLoss; an epoch = every query once (seeded order), one of its rows drawn at random."""
    import torch
    from tqdm.auto import tqdm

    try:
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(seed)
    rng = random.Random(seed)
    qids = sorted(rows)
    if getattr(args, "loss", "mnrl") == "gist":
        # GISTEmbed: in-batch negatives the frozen base model scores above the pair's positive are masked (the
        # batch's other positives are often relevant too: an NFCorpus document is relevant to ~30 train queries)
        try:
            from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss
        except ImportError:
            from sentence_transformers.losses import GISTEmbedLoss
        guide = load_model(args.max_seq_length)
        guide.eval()
        loss_fn = GISTEmbedLoss(model, guide)
    else:
        loss_fn = MultipleNegativesRankingLoss(model)
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr)
    steps = steps_of(args, ds.name)
    warmup = max(1, round(steps * 0.1))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    model.train()
    for batch in tqdm(batches(qids, steps, args.batch_size, rng), total=steps, desc=f"training {ds.name} seed {seed}",
                      unit="step"):
        picked = [(q, rng.choice(rows[q])) for q in batch]
        columns = [[ds.queries[q] for q, _ in picked]]
        for c in range(len(picked[0][1])):
            columns.append([ds.corpus[r[c]] for _, r in picked])
        features = [model.tokenize(col) for col in columns]
        loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    return model


# ---------------------------------------------------------------- training files (ids)


def steps_of(args, dataset: str) -> int:
    """Training steps of a data set: `--steps 80` for all, or `--steps nfcorpus=80 scifact=50` (a bare number is the
    default of the data sets not named)."""
    steps = args.steps if isinstance(args.steps, dict) else parse_steps([str(args.steps)])
    return steps.get(dataset, steps.get("*", 40))


def parse_steps(values: list[str]) -> dict[str, int]:
    out = {}
    for v in values:
        name, _, n = v.rpartition("=")
        out[name or "*"] = int(n)
    return out


def file_in_batch(ds: Dataset, args) -> dict:
    return {q: [[d]] for q, d in ds.labeled.items()}


def file_random(ds: Dataset, args) -> dict:
    rng = random.Random(PROTOCOL_SEED)
    out = {}
    for q, d in sorted(ds.labeled.items()):
        negs = []
        while len(negs) < 5:
            x = rng.choice(ds.doc_ids)
            if x != d and ds.corpus[x] != ds.corpus[d] and x not in negs:
                negs.append(x)
        out[q] = [[d, x] for x in negs]
    return out


def file_st(row: str, ds: Dataset, args) -> dict:
    """sentence-transformers' miner on (query, labeled positive) pairs; its texts mapped back to ids."""
    from datasets import Dataset as HFDataset
    from sentence_transformers.util import mine_hard_negatives

    qids = sorted(ds.labeled)
    data = HFDataset.from_dict({"query": [ds.queries[q] for q in qids],
                                "positive": [ds.corpus[ds.labeled[q]] for q in qids]})
    import fcntl

    corpus = list(dict.fromkeys(ds.corpus.values()))
    folder = ds.cache.parent.parent / "st-embeddings" / f"{ds.name}-len{MINER_LENGTH}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # one process encodes; the others do other jobs meanwhile
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotYet(f"another process is encoding {folder}") from None
        model = load_model(MINER_LENGTH)
        # sampling_strategy="random" draws with Python's global `random`, which the miner never seeds: unseeded, every
        # mining of st-recipe would be another file (bench/README.md, "Downstream", says what that changed)
        random.seed(PROTOCOL_SEED)
        out = mine_hard_negatives(data, model, corpus=corpus, cache_folder=str(folder), **ST_ROWS[row])
    by_query: dict[str, list[str]] = {}
    for q in qids:
        by_query.setdefault(ds.queries[q], [])
    qid_of = {}
    for q in qids:  # identical query texts: ST merges them (extra positives); give the rows to each
        qid_of.setdefault(ds.queries[q], []).append(q)
    rows: dict[str, list[list[str]]] = {}
    for r in out:
        for q in qid_of[r["anchor"] if "anchor" in r else r["query"]]:
            pos = ds.labeled[q]
            if ds.corpus[pos] != r["positive"]:
                continue
            rows.setdefault(q, []).append([pos, ds.by_text[r["negative"]][0]])
    return rows


def hidden_copy(ds: Dataset) -> Path:
    """The train split as a BEIR directory whose qrels are the labeled positives only, imported with hardneg."""
    from hardneg.config import ImportConfig
    from hardneg.stages import import_

    out = ds.cache / "hidden-train"
    data_dir = out / "data"
    if (data_dir / "_SUCCESS").exists():
        return data_dir
    write_beir(out, "train", sorted(ds.labeled.items()), src=ds.src)
    import_.run(out, data_dir, ImportConfig(split="train"), True)
    return data_dir


def seed_index(run_dir: Path, cfg, ds: Dataset) -> None:
    """A config whose [index] equals the default's starts from a copy of the default run's finished index: the stage
    `hardneg run` would build (same config, same data, so `run` finds it up to date), without encoding the corpus
    again. Mining time is not what this benchmark compares."""
    import shutil

    from hardneg.config import asdict
    from hardneg.io.stagedir import SUCCESS, read_manifest

    src, dst = ds.cache / "hardneg" / "default" / "index", run_dir / "index"
    if dst.exists() or run_dir == src.parent or not (src / SUCCESS).exists():
        return
    if read_manifest(src).get("config") != asdict(cfg.index):
        return
    log(f"{ds.name}: {run_dir.name}: starting from a copy of the default run's index (same [index] config)")
    tmp = dst.with_name("index.copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("_lock"))
    tmp.rename(dst)


def file_hardneg(row: str, ds: Dataset, args) -> dict:
    """`hardneg run DATA_DIR --out RUN --config FILE` unchanged; rows = its exported triplets, texts mapped to ids."""
    if not SCORE_REUSE:
        # without score's reuse of the index embeddings, a top-1000 pool costs hours of teacher encoding per part
        raise NotYet("this hardneg's score stage does not reuse the index embeddings (merge branch score, restart)")
    import polars as pl

    from hardneg.config import load_pipeline
    from hardneg.pipeline import run

    path = config_path(row.removeprefix("hardneg-"))
    data_dir = hidden_copy(ds)
    cfg = load_pipeline(path)
    run_dir = ds.cache / "hardneg" / path.stem
    seed_index(run_dir, cfg, ds)
    # one run directory per config name: an edited config rebuilds only its changed stages and what follows
    paths = run(data_dir, run_dir, cfg, overwrite=True, log=log)
    export = paths["export"]
    if cfg.export.format != "triplets":
        # e.g. rlhn-relabel's FlagEmbedding groups: the same relabeled stage exported as triplets, every positive
        # (promoted ones too) x every negative, which is what the groups hold; the run itself is as shipped
        from dataclasses import replace

        from hardneg.stages.export import run as export_run

        export = run_dir / "train-as-triplets.parquet"
        log(f"{ds.name}: {path.stem} exports {cfg.export.format}: training on {export.name} (pairing all)")
        export_run(paths["relabel"], data_dir, export, replace(cfg.export, format="triplets", pairing="all"),
                   overwrite=True)
    table = pl.read_parquet(export)
    if table.columns[:3] != ["anchor", "positive", "negative"]:
        raise SystemExit(f"{path}: the export is not triplets (columns {table.columns}); downstream trains on triplets")
    qids_of: dict[str, list[str]] = {}
    for q in sorted(ds.labeled):
        qids_of.setdefault(ds.queries[q], []).append(q)

    def doc_id(text: str) -> str:
        ids = ds.by_text.get(text) or ds.by_text.get(text.strip())
        if not ids:
            raise SystemExit(f"{path}: an exported text is not a corpus document: {text[:80]!r}")
        return ids[0]

    rows: dict[str, list[list[str]]] = {}
    for anchor, pos, neg in table.select("anchor", "positive", "negative").iter_rows():
        # the training file as the user gets it, its texts mapped back to ids; queries sharing a text (NFCorpus has
        # 14) each own the rows of their labeled positive (a row whose positive is none of theirs goes to each)
        qids = qids_of.get(anchor, [])
        p, n = doc_id(pos), doc_id(neg)
        own = [q for q in qids if ds.corpus[ds.labeled[q]] == ds.corpus[p]] or qids
        for q in own:
            rows.setdefault(q, []).append([p, n])
    return rows


def file_key(row: str) -> str:
    """What a row's training file depends on (a hardneg row: its config file's content)."""
    parts = {"row": row, "protocol_seed": PROTOCOL_SEED, "miner_length": MINER_LENGTH}
    if row.startswith("hardneg-"):
        parts["config"] = hashlib.sha256(config_path(row.removeprefix("hardneg-")).read_bytes()).hexdigest()
    if row in ST_ROWS:
        parts["st"] = ST_ROWS[row]
        if ST_ROWS[row].get("sampling_strategy") == "random":
            parts["python_random_seed"] = PROTOCOL_SEED  # see file_st
    return sha(parts)


def training_file(row: str, ds: Dataset, args) -> dict:
    """{"rows": {qid: [[pos, neg], ...]}, "key": ..., "seconds": ..., "metrics": ...}, cached by file_key(row)."""
    path = ds.cache / "files" / f"{row}-{file_key(row)}.json"
    if path.exists():
        return json.loads(path.read_text())
    log(f"{ds.name}: mining the training file of {row}")
    start = time.perf_counter()
    if row == "in-batch":
        rows = file_in_batch(ds, args)
    elif row == "random":
        rows = file_random(ds, args)
    elif row in ST_ROWS:
        rows = file_st(row, ds, args)
    elif row.startswith("hardneg-"):
        rows = file_hardneg(row, ds, args)
    else:
        raise SystemExit(f"unknown row {row!r}")
    out = {"row": row, "key": file_key(row), "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    out["metrics"] = {"dataset": ds.name, "row": row, "mining_seconds": out["seconds"],
                      **file_metrics(rows, ds, args)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, path)
    return out


def base_path(ds: Dataset, args) -> Path:
    """Shared by the full run and --quick (whose evaluation corpus is a sample)."""
    return ds.cache.parent.parent / "base-emb" / f"{ds.name}-len{args.max_seq_length}.npz"


def base_embeddings(ds: Dataset, args) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The base model's full-corpus and train-query embeddings at the benchmark length (hardness), cached."""
    path = base_path(ds, args)
    qids = sorted(ds.labeled)
    if not path.exists():
        model = load_model(args.max_seq_length)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, docs=encode(model, [ds.corpus[d] for d in ds.doc_ids], f"{ds.name} documents (base)"),
                 queries=encode(model, [ds.queries[q] for q in qids], f"{ds.name} train queries (base)"))
    return load_base(path, qids)


def save_base(ds: Dataset, args, docs: np.ndarray) -> None:
    """The base evaluation's full-corpus embeddings serve the hardness measure too (not in --quick: a sample)."""
    path = base_path(ds, args)
    if ds.eval_doc_ids is not ds.doc_ids or path.exists():
        return
    qids = sorted(ds.labeled)
    queries = encode(load_model(args.max_seq_length), [ds.queries[q] for q in qids], f"{ds.name} train queries")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, docs=docs, queries=queries)


def load_base(path: Path, qids: list[str]):
    z = np.load(path)
    return z["docs"], z["queries"], qids


def file_metrics(rows: dict, ds: Dataset, args) -> dict:
    """False negatives and wrong positives by the full train qrels; hardness by the base model (benchmark length)."""
    n_rows = sum(map(len, rows.values()))
    pairs = {(q, r[0]) for q, rs in rows.items() for r in rs}
    wrong_pos = {(q, p) for q, p in pairs if p not in ds.relevant_train(q)}
    out = {"queries": len(rows), "train_queries": len(ds.labeled), "rows": n_rows,
           "positives": len(pairs), "wrong_positives": len(wrong_pos),
           "rows_with_wrong_positive": sum((q, r[0]) in wrong_pos for q, rs in rows.items() for r in rs) / n_rows}
    negs = {(q, r[1]) for q, rs in rows.items() for r in rs if len(r) > 1}
    if not negs:
        return out | {"negatives": 0, "fn_rate": None, "queries_with_fn": None, "median_rank": None,
                      "median_ratio": None}
    fns = {(q, n) for q, n in negs if n in ds.relevant_train(q)}
    docs, queries, qids = base_embeddings(ds, args)
    qpos = {q: i for i, q in enumerate(qids)}
    dpos = {d: i for i, d in enumerate(ds.doc_ids)}
    ranks, ratios = [], []
    for q in sorted({q for q, _ in negs}):
        s = docs @ queries[qpos[q]]
        order = np.empty(len(s), dtype=np.int64)
        order[np.argsort(-s, kind="stable")] = np.arange(1, len(s) + 1)
        p = s[dpos[ds.labeled[q]]]
        for n in {n for qq, n in negs if qq == q}:
            ranks.append(int(order[dpos[n]]))
            ratios.append(float(s[dpos[n]] / p) if p > 0 else float("nan"))
    by_q = {}
    for q, n in negs:
        by_q.setdefault(q, []).append((q, n) in fns)
    return out | {"negatives": len(negs), "false_negatives": len(fns), "fn_rate": len(fns) / len(negs),
                  "queries_with_fn": sum(any(v) for v in by_q.values()) / len(by_q),
                  "median_rank": float(np.median(ranks)), "median_ratio": float(np.nanmedian(ratios))}


# ---------------------------------------------------------------- the run


def eval_path(row: str, seed, ds_cache: Path, args) -> tuple[Path, dict]:
    settings = training_settings(args) | {"steps": steps_of(args, ds_cache.name)}
    if settings.get("loss") == "mnrl":  # keys made before --loss existed stay valid
        del settings["loss"]
    return evaluation_file(ds_cache, row, seed, None if row == "base" else file_key(row), settings), settings


def evaluation_file(ds_cache: Path, row: str, seed, file: str | None, settings: dict) -> Path:
    """Where the evaluation of `row` trained on the file keyed `file` with `seed` and `settings` is cached."""
    key = sha({"row": row, "seed": seed, "file": file, "settings": settings})
    return ds_cache / "evals" / f"{row}-seed{seed}-{key}.json"


def same_file_eval(row: str, seed, f: dict, ds: Dataset, settings: dict) -> dict | None:
    """An evaluation already made of a training file with the very same rows (another row's name, e.g. a bench
    variant that became the default): training depends only on the rows, the seed and the settings."""
    digest = sha(f["rows"])
    for other in sorted((ds.cache / "files").glob("*.json")):
        o = json.loads(other.read_text())
        if o["key"] == f["key"] or sha(o["rows"]) != digest:
            continue
        done = evaluation_file(ds.cache, o["row"], seed, o["key"], settings)
        if done.exists():
            return {**json.loads(done.read_text()), "row": row, "same_rows_as": o["row"]}
    return None


def model_eval(row: str, seed, ds: Dataset, args) -> dict:
    path, settings = eval_path(row, seed, ds.cache, args)
    if path.exists():
        return json.loads(path.read_text())
    f = None if row == "base" else training_file(row, ds, args)
    if f is not None and (out := same_file_eval(row, seed, f, ds, settings)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        log(f"{ds.name}: {row} seed {seed}: the same rows as {out['same_rows_as']}, evaluated already")
        return out
    log(f"{ds.name}: {row} seed {seed}")
    start = time.perf_counter()
    model = load_model(args.max_seq_length)
    if f is not None:
        model = train(model, f["rows"], ds, args, seed)
    trained = time.perf_counter() - start
    metrics, docs = evaluate(model, ds)
    if row == "base":
        save_base(ds, args, docs)
    out = {"dataset": ds.name, "row": row, "seed": seed, **metrics, "train_seconds": round(trained, 1),
           "seconds": round(time.perf_counter() - start, 1), "settings": settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    log(f"{ds.name}: {row} seed {seed}: nDCG@10 {out['ndcg_at_10']:.4f} R@100 {out['recall_at_100']:.4f} "
        f"({out['seconds']:.0f} s)")
    return out


def collect(args) -> dict:
    """Every finished evaluation of the current settings and training files, from the cache (several worker
    processes may share it)."""
    runs, files = [], []
    rows = list(dict.fromkeys(PRIORITY + args.rows))
    for name in args.report_datasets:
        cache = args.cache / name
        for row in rows:
            try:
                key = None if row == "base" else file_key(row)
            except SystemExit:
                continue
            for seed in [None] if row == "base" else args.seeds:
                path, _ = eval_path(row, seed, cache, args)
                if path.exists():
                    r = json.loads(path.read_text())
                    runs.append({k: r[k] for k in ("dataset", "row", "seed", "ndcg_at_10", "recall_at_100",
                                                   "train_seconds", "seconds")})
            fpath = cache / "files" / f"{row}-{key}.json"
            if key and fpath.exists():  # judged even before a model is trained on it
                files.append(json.loads(fpath.read_text())["metrics"])
    return {"runs": runs, "files": files}


def summarize(runs: list[dict], files: list[dict]) -> dict:
    """(dataset, row) -> mean/std/n of nDCG@10 and Recall@100 plus the training file's metrics."""
    out = {}
    for r in runs:
        out.setdefault((r["dataset"], r["row"]), []).append(r)
    fm = {(f["dataset"], f["row"]): f for f in files}
    summary = {}
    for k, rs in out.items():
        nd = [r["ndcg_at_10"] for r in rs]
        rc = [r["recall_at_100"] for r in rs]
        summary[k] = {"n": len(rs), "ndcg": statistics.mean(nd), "ndcg_sd": statistics.stdev(nd) if len(nd) > 1 else 0.0,
                      "recall": statistics.mean(rc), "recall_sd": statistics.stdev(rc) if len(rc) > 1 else 0.0,
                      "file": fm.get(k)}
    return summary


def verdict(s: dict, base: dict | None) -> str:
    """A row beats the base model only when its mean is ahead by more than the seeds' spread (both rows' standard
    deviations added; the base model is deterministic); one seed has no spread to judge by."""
    if base is None or s is base:
        return ""
    d = s["ndcg"] - base["ndcg"]
    if s["n"] < 2:
        return f"{d * 100:+.2f} (one seed: no spread yet)"
    return f"{d * 100:+.2f} vs base" + (" (beyond spread)" if abs(d) > s["ndcg_sd"] + base["ndcg_sd"] else
                                      " (within spread)")


def markdown(doc: dict) -> str:
    runs, files, cfg = doc["runs"], doc["files"], doc["settings"]
    summary = summarize(runs, files)
    steps = cfg["steps"] if isinstance(cfg["steps"], dict) else {"*": cfg["steps"]}
    steps = ", ".join(f"{n} ({k})" if k != "*" else str(n) for k, n in sorted(steps.items()))
    lines = [(f"Fine-tune of all-MiniLM-L6-v2 with MultipleNegativesRankingLoss: {steps} steps x batch "
             f"{cfg['batch_size']}, lr {cfg['lr']} (10% warm-up, linear decay), {cfg['max_seq_length']} tokens; "
             f"train split, one labeled positive per query (the rest hidden); test split over the full corpus. "
             f"Mean ± standard deviation over the seeds (n). FN = negatives relevant by the full train qrels; "
             f"wrong pos. = training rows whose positive is not relevant by them; rank = median base-model rank of "
             f"the negatives; ratio = median cosine(negative) / cosine(labeled positive), base model. "
             f"Command: `{doc['command']}`."), ""]
    for dataset in sorted({k[0] for k in summary}):
        keys = [k for k in summary if k[0] == dataset]
        order = {r: i for i, r in enumerate(PRIORITY)}
        keys.sort(key=lambda k: (order.get(k[1], len(order)), k[1]))
        base = summary.get((dataset, "base"))
        trained = [summary[k] for k in keys if k[1] != "base"]
        best = max(trained, key=lambda s: s["ndcg"]) if trained else None
        lines += [f"**{dataset}**", "",
                  ("| row | n | nDCG@10 | Recall@100 | vs base (points) | training queries | rows | FN | "
                  "queries with FN | wrong pos. | rank | ratio |"),
                  "|---|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        for k in keys:
            s = summary[k]
            f = s["file"] or {}
            pct = (lambda v: "–" if v is None else f"{100 * v:.1f}%")
            num = (lambda v, fmt: "–" if v is None else format(v, fmt))
            mark = "**" if s is best else ""
            lines.append(
                f"| {k[1]} | {s['n']} | {mark}{s['ndcg']:.4f} ± {s['ndcg_sd']:.4f}{mark} | "
                f"{s['recall']:.4f} ± {s['recall_sd']:.4f} | {verdict(s, base) or '–'} | "
                f"{f.get('queries', '–')} | {f.get('rows', '–')} | {pct(f.get('fn_rate'))} | "
                f"{pct(f.get('queries_with_fn'))} | {pct(f.get('rows_with_wrong_positive'))} | "
                f"{num(f.get('median_rank'), '.0f')} | {num(f.get('median_ratio'), '.3f')} |")
        if best is not None:
            ranked = sorted(trained, key=lambda s: -s["ndcg"])
            if len(ranked) > 1:
                a, b = ranked[0], ranked[1]
                gap = a["ndcg"] - b["ndcg"]
                name = {id(v): k[1] for k, v in summary.items()}
                beyond = gap > a["ndcg_sd"] + b["ndcg_sd"]
                judged = ("one seed: no spread yet" if min(a["n"], b["n"]) < 2 else
                          f"{'beyond' if beyond else 'within'} the seeds' spread "
                          f"({(a['ndcg_sd'] + b['ndcg_sd']) * 100:.2f})")
                lines += ["", (f"Best trained row: {name[id(a)]} ({a['ndcg']:.4f}), {gap * 100:.2f} points ahead of "
                              f"{name[id(b)]}: {judged}.")]
        lines.append("")
    if files:
        order = {r: i for i, r in enumerate(PRIORITY)}
        pct = (lambda v: "–" if v is None else f"{100 * v:.1f}%")
        lines += [("The training files, judged with the full train qrels (every file built so far, trained on or not; "
                  "yield = queries of the train split with at least one row):"), "",
                  ("| data set | row | queries (yield) | rows | negatives | FN | queries with FN | wrong-positive rows "
                  "| median rank | median ratio | mining s |"),
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for f in sorted(files, key=lambda f: (f["dataset"], order.get(f["row"], len(order)), f["row"])):
            rank = "–" if f.get("median_rank") is None else f"{f['median_rank']:.0f}"
            ratio = "–" if f.get("median_ratio") is None else f"{f['median_ratio']:.3f}"
            lines.append(f"| {f['dataset']} | {f['row']} | {f['queries']} ({pct(f['queries'] / f['train_queries'])}) "
                         f"| {f['rows']} | {f.get('negatives', 0)} | {pct(f.get('fn_rate'))} | "
                         f"{pct(f.get('queries_with_fn'))} | {pct(f['rows_with_wrong_positive'])} | {rank} | {ratio} "
                         f"| {f['mining_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(doc["runs"], doc["files"])
    datasets = sorted({k[0] for k in summary})
    fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 5.5 * len(datasets)), squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, (metric, label) in enumerate([("fn_rate", "false-negative rate of the training file's negatives"),
                                             ("median_rank", ("hardness: median base-model rank of the negatives "
                                                             "(log; left = harder)"))]):
            ax = axes[i][j]
            for (ds, row), s in summary.items():
                f = s["file"] or {}
                if ds != dataset or f.get(metric) is None:
                    continue
                x = f[metric] * (100 if metric == "fn_rate" else 1)
                default = row == "hardneg-default"
                color = "black" if default else "tab:red" if row.startswith("hardneg") else "tab:blue"
                ax.errorbar(x, s["ndcg"], yerr=s["ndcg_sd"], fmt="*" if default else "o", color=color, capsize=3,
                            markersize=11 if default else 5, zorder=3 if default else 2)
                name = row.removeprefix("hardneg-") + ("" if s["n"] >= 3 else f" (n={s['n']})")
                ax.annotate(name, (x, s["ndcg"]), textcoords="offset points", xytext=(5, 4), fontsize=7,
                            fontweight="bold" if default else "normal", color=color)
            for row, style in (("base", "--"), ("in-batch", ":")):
                s = summary.get((dataset, row))
                if s:
                    ax.axhline(s["ndcg"], ls=style, color="gray", lw=1)
                    ax.annotate(row, (0.01, s["ndcg"]), xycoords=("axes fraction", "data"), fontsize=8, color="gray",
                                va="bottom")
            if metric == "median_rank":
                ax.set_xscale("log")
            else:
                ax.set_xlim(-1, max(10.0, ax.get_xlim()[1] * 1.1))
            ax.set_xlabel(label + (" (%)" if metric == "fn_rate" else ""), fontsize=9)
            ax.set_ylabel(f"{dataset} test nDCG@10 (mean ± sd)", fontsize=9)
            ax.grid(alpha=0.3)
    fig.suptitle("Downstream: MiniLM fine-tuned on each training file, mean ± sd over the seeds (black star: hardneg's "
                 "default; red: other hardneg configs; blue: the alternatives)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_results(doc: dict, out: Path, readme: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def write(path: Path, text: str) -> None:  # atomic: two workers may report at once
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    write(out / "downstream.json", json.dumps(doc, indent=1) + "\n")
    table = markdown(doc)
    write(out / "downstream.md", table)
    if doc["runs"]:
        plot(doc, out / "downstream.png")
    if readme is not None and readme.exists() and BEGIN in readme.read_text():
        text = readme.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        write(readme, f"{head}{BEGIN}\n{table}\n{END}{tail}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                    help="directory holding the BEIR data sets (nfcorpus/, scifact/)")
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--rows", nargs="+", default=PRIORITY,
                    help="rows in priority order; hardneg-NAME runs configs/NAME.toml or bench/configs/NAME.toml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", nargs="+", default=["40"],
                    help="training steps: N for every data set, or NAME=N per data set (nfcorpus=80 scifact=50)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--loss", choices=["mnrl", "gist"], default="mnrl",
                    help="mnrl: MultipleNegativesRankingLoss; gist: GISTEmbedLoss guided by the frozen base model")
    ap.add_argument("--max-seq-length", type=int, default=64, help="training and evaluation length")
    ap.add_argument("--order", choices=["row", "seed"], default="row",
                    help="row: every seed of a row before the next row (full seeds first); seed: every row at "
                         "seed 0 first")
    ap.add_argument("--quick", action="store_true",
                    help="smoke: SciFact, base/in-batch/random, seed 0, 5 steps, evaluated on a 1,000-document "
                         "sample of the corpus plus the relevant documents (results in bench/results/quick)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the JSON, table and plot from the cache")
    ap.add_argument("--report-datasets", nargs="+", default=["scifact", "nfcorpus"],
                    help="data sets whose cached results the JSON and table hold (workers may split --datasets)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (two one-thread workers, one per data set, waste less on a busy CPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "downstream")
    return ap


def training_settings(args) -> dict:
    """The training settings of the command line (`args.steps` parsed), recorded in the results' header; an
    evaluation's cache key holds them for its data set (eval_path)."""
    keys = ("steps", "batch_size", "lr", "max_seq_length", "quick", "loss")
    return {k: v for k, v in vars(args).items() if k in keys}


def main(argv=None):
    args = parser().parse_args(argv)
    # the command that reproduces the table (workers split --datasets; --report-only rewrites it from the cache)
    command = (f"python bench/downstream.py --data-root ../shared/data --rows {' '.join(args.rows)} --seeds "
               f"{' '.join(map(str, args.seeds))} --steps {' '.join(args.steps)} --batch-size {args.batch_size} --lr {args.lr} "
               f"--max-seq-length {args.max_seq_length} --loss {args.loss}")
    if args.quick:
        command = "python bench/downstream.py --data-root ../shared/data --quick"
        args.datasets, args.rows, args.seeds, args.steps = ["scifact"], ["base", "in-batch", "random"], [0], ["5"]
        args.out, args.cache = args.out / "quick", args.cache.with_name("downstream-quick")
        args.report_datasets = args.datasets
    readme = None if args.quick else ROOT / "bench" / "README.md"
    args.steps = parse_steps(args.steps)
    settings = training_settings(args)
    header = {"command": command, "argv": sys.argv[1:] if argv is None else argv,
              "settings": settings | {"protocol_seed": PROTOCOL_SEED, "miner_length": MINER_LENGTH}}

    def report():
        write_results(header | collect(args), args.out, readme)

    if args.report_only:
        report()
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sets = {name: Dataset(args.data_root / name, args.cache, args.quick) for name in args.datasets}
    for ds in sets.values():
        log(f"{ds.name}: {len(ds.labeled)} train queries, {sum(map(len, ds.hidden.values()))} hidden positives, "
            f"{len(ds.corpus)} documents")
    seeds_of = {row: [None] if row == "base" else args.seeds for row in args.rows}
    if args.order == "row":
        jobs = [(row, seed, name) for row in args.rows for seed in seeds_of[row] for name in args.datasets]
    else:
        jobs = [(row, seed, name) for i in range(len(args.seeds)) for row in args.rows
                for seed in seeds_of[row][i:i + 1] for name in args.datasets]
    while jobs:
        deferred = []
        for row, seed, name in jobs:
            try:
                model_eval(row, seed, sets[name], args)
            except NotYet as exc:
                log(f"{name}: {row} seed {seed}: later: {exc}")
                deferred.append((row, seed, name))
                continue
            except Exception as exc:  # noqa: BLE001 -- a miner that fails (a config hardneg rejects): say, go on
                log(f"{name}: {row} seed {seed}: failed: {type(exc).__name__}: {exc}")
                continue
            report()
        if deferred == jobs:
            log(f"{len(jobs)} jobs waiting; next try in 5 minutes")
            time.sleep(300)
        jobs = deferred
    log("done")


if __name__ == "__main__":
    main()
