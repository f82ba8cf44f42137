"""Downstream check: does training on hardneg's negatives give a better retriever than the alternatives?

    python bench/downstream.py --data ../shared/data/nfcorpus --out bench/results

Fine-tunes the packaged all-MiniLM-L6-v2 with MultipleNegativesRankingLoss on a seeded subsample of NFCorpus TRAIN
queries, one labeled positive each (the other relevant documents hidden, as in bench/hidden_positive.py), with one
negative per query from: none (in-batch negatives only), naive dense top-1 (the best-ranked non-positive),
sentence-transformers' `mine_hard_negatives` with its defaults (num_negatives=1), and hardneg's configs/default.toml
(its best-ranked kept negative; queries left without one are left out, as a user's training file would). Same seed,
steps, batch size and learning rate for every row; evaluated on NFCorpus TEST (all qrels) with nDCG@10 and
Recall@100 over the full corpus (bench/protocol.py::ndcg_recall). The first row is the base model.
Results of each row are cached in bench/.cache so that a rerun only does what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.hidden_positive import Stages, read_stage, st_cache, write_hidden_copy  # noqa: E402
from bench.protocol import hide_positives, ndcg_recall, read_beir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_model(path: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = max_seq_length
    return model


def evaluate(model, corpus: dict, queries: dict, qrels: dict, batch_size: int = 64) -> dict:
    doc_ids = list(corpus)
    qids = [q for q in qrels if q in queries]
    d = model.encode([corpus[x] for x in doc_ids], batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=True)
    q = model.encode([queries[x] for x in qids], batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True)
    scores = q @ d.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    run = {qid: [doc_ids[j] for j in top[i]] for i, qid in enumerate(qids)}
    return ndcg_recall(run, {x: qrels[x] for x in qids}), d


def train(model, rows: list[tuple[str, ...]], steps: int, batch_size: int, lr: float, seed: int):
    """MultipleNegativesRankingLoss over (anchor, positive[, negative]) rows; seeded shuffles, linear warmup 10%."""
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    model.train()
    order: list[int] = []
    for _ in tqdm(range(steps), desc="training", unit="step"):
        if len(order) < batch_size:
            extra = list(range(len(rows)))
            rng.shuffle(extra)
            order += extra
        batch = [rows[i] for i in order[:batch_size]]
        order = order[batch_size:]
        features = [model.tokenize([r[c] for r in batch]) for c in range(len(batch[0]))]
        loss = loss_fn(features, None)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    model.eval()
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-queries", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-seq-length", type=int, default=64,
                    help="every encoder: mining (a teacher only unless the config sets its length), training, "
                         "evaluation (sized for the shared 2-core CPU)")
    ap.add_argument("--hardneg-config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--cache", type=Path, default=Path("bench/.cache"))
    args = ap.parse_args(argv)

    from hardneg.config import ImportConfig, load_pipeline
    from hardneg.models import resolve
    from hardneg.stages import import_

    corpus, queries, train_qrels = read_beir(args.data, "train")
    _, _, test_qrels = read_beir(args.data, "test")
    eligible = sorted(q for q in train_qrels if q in queries and any(r > 0 for r in train_qrels[q].values()))
    chosen = sorted(random.Random(args.seed).sample(eligible, min(args.train_queries, len(eligible))))
    labeled, hidden = hide_positives({q: train_qrels[q] for q in chosen}, args.seed, min_relevant=1)
    qids = sorted(labeled)
    tag = f"seed{args.seed}-q{len(qids)}-s{args.steps}-b{args.batch_size}-lr{args.lr}-len{args.max_seq_length}"
    cache = args.cache / f"downstream-{tag}"
    cache.mkdir(parents=True, exist_ok=True)
    base = resolve("all-MiniLM-L6-v2")
    print(f"[downstream] {len(qids)} train queries, {sum(map(len, hidden.values()))} hidden positives", flush=True)

    def negatives_naive(doc_emb):
        model = load_model(base, args.max_seq_length)
        q = model.encode([queries[x] for x in qids], normalize_embeddings=True, convert_to_numpy=True)
        doc_ids = list(corpus)
        top = np.argsort(-(q @ doc_emb.T), axis=1, kind="stable")[:, :10]
        return {x: next(doc_ids[j] for j in top[i] if doc_ids[j] != labeled[x]) for i, x in enumerate(qids)}

    def negatives_st():
        from datasets import Dataset
        from sentence_transformers.util import mine_hard_negatives

        by_text: dict[str, str] = {}
        for d, text in corpus.items():
            by_text.setdefault(text, d)
        ds = Dataset.from_dict({"query": [queries[x] for x in qids], "positive": [corpus[labeled[x]] for x in qids]})
        out = mine_hard_negatives(ds, load_model(base, args.max_seq_length), corpus=list(corpus.values()),
                                  num_negatives=1,
                                  cache_folder=st_cache(args.max_seq_length))
        qtext = {queries[x]: x for x in qids}
        return {qtext[r["query"]]: by_text[r["negative"]] for r in out}

    def negatives_hardneg():
        copy = write_hidden_copy(args.data, cache / "hidden-train", "train", labeled, hidden)
        data_dir = copy / "data"
        if not (data_dir / "_SUCCESS").exists():
            import_.run(copy, data_dir, ImportConfig(split="train"))
        cfg = load_pipeline(args.hardneg_config)
        cfg = dataclasses.replace(cfg, import_=ImportConfig(split="train"),
                                  index=dataclasses.replace(cfg.index, max_seq_length=args.max_seq_length),
                                  score=dataclasses.replace(cfg.score, max_seq_length=cfg.score.max_seq_length
                                                            or args.max_seq_length))  # as hidden_positive.py
        paths = Stages(cache / "stages", data_dir).run(cfg)
        best: dict[str, tuple[int, str]] = {}
        for r in read_stage(paths["relabel"]):
            if r["label"] == "negative" and (r["query_id"] not in best or r["rank"] < best[r["query_id"]][0]):
                best[r["query_id"]] = (r["rank"], r["doc_id"])
        return {q: d for q, (_, d) in best.items()}

    def cached(name, fn):
        path = cache / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        start = time.perf_counter()
        value = fn()
        out = {"value": value, "seconds": round(time.perf_counter() - start, 1)}
        path.write_text(json.dumps(out))
        return out

    results = []

    def save():
        """Print and write the table and JSON so far: called after every row (a long run keeps what it measured)."""
        lines = [f"Downstream: all-MiniLM-L6-v2 + MultipleNegativesRankingLoss on {len(qids)} NFCorpus train queries "
                 f"(one labeled positive each, one negative per row), {args.steps} steps, batch {args.batch_size}, "
                 f"lr {args.lr}, max_seq_length {args.max_seq_length}, seed {args.seed}; NFCorpus test, full corpus.",
                 "",
                 "| negatives | nDCG@10 | Recall@100 | training rows | hidden positives used as negatives "
                 "| mining s | train+eval s |", "|---|---|---|---|---|---|---|"]
        for r in results:
            n_fn = r["false_negatives"]
            fn = "—" if n_fn is None else f"{n_fn} ({100 * n_fn / max(r['train_rows'], 1):.1f}%)"
            mine_s = "—" if r["mine_seconds"] is None else f"{r['mine_seconds']:.0f}"
            lines.append(f"| {r['negatives']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['train_rows']} "
                         f"| {fn} | {mine_s} | {r['seconds']:.0f} |")
        table = "\n".join(lines) + "\n"
        print(table)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "downstream.md").write_text(table)
        (args.out / "downstream.json").write_text(json.dumps(
            {"command": "python bench/downstream.py " + " ".join(argv or sys.argv[1:]), "config": vars(args) | {
                "data": str(args.data), "hardneg_config": str(args.hardneg_config), "out": str(args.out),
                "cache": str(args.cache)}, "rows": results}, indent=2) + "\n")

    def base_row():
        metrics, emb = evaluate(load_model(base, args.max_seq_length), corpus, queries, test_qrels)
        np.save(cache / "base_doc_emb.npy", emb)
        return metrics

    r = cached("eval-base", base_row)
    results.append({"negatives": "base model (no fine-tuning)", **r["value"], "train_rows": 0,
                    "false_negatives": None, "mine_seconds": None, "seconds": r["seconds"]})
    save()
    sources = {
        "none (in-batch only)": lambda: {},
        "naive dense top-1": lambda: negatives_naive(np.load(cache / "base_doc_emb.npy")),
        "ST mine_hard_negatives defaults": negatives_st,
        f"hardneg {args.hardneg_config.stem}": negatives_hardneg,
    }
    for name, fn in sources.items():
        slug = name.split()[0].lower()
        negs = cached(f"negatives-{slug}", fn)
        neg = negs["value"]
        if name.startswith("none"):
            rows = [(queries[q], corpus[labeled[q]]) for q in qids]
        else:
            rows = [(queries[q], corpus[labeled[q]], corpus[neg[q]]) for q in qids if q in neg]
        fns = None if name.startswith("none") else sum(neg[q] in hidden[q] for q in qids if q in neg)

        def run_row(rows=rows):
            model = train(load_model(base, args.max_seq_length), rows, args.steps, args.batch_size, args.lr,
                          args.seed)
            return evaluate(model, corpus, queries, test_qrels)[0]

        r = cached(f"eval-{slug}", run_row)
        results.append({"negatives": name, **r["value"], "train_rows": len(rows), "false_negatives": fns,
                        "mine_seconds": negs["seconds"], "seconds": r["seconds"]})
        print(f"[downstream] {json.dumps(results[-1])}", flush=True)
        save()


if __name__ == "__main__":
    main()
