"""`hardneg.mine_hard_negatives` against `sentence_transformers.util.mine_hard_negatives` on the same pairs, with the
same model and filter, in one run: wall time and negatives kept.

    python bench/api_vs_st.py --data /work/shared/data/scifact [--split train] [--num-negatives 3]
        [--relative-margin 0.05] [--batch-size 32] [--order st,hardneg]

Pairs: (query text, relevant document text) for every row of the BEIR directory's `qrels.<split>.tsv` (SciFact
train: 919 pairs of 809 queries); corpus: every document's "title text". Both sides: the packaged all-MiniLM-L6-v2
(`hardneg.models.resolve`), `relative_margin`, `num_negatives`, `range_max` left to each side's default (hardneg's API
uses sentence-transformers' formula: range_min + 10 x num_negatives + the most positives of a query), triplets,
batch size 32. Each side is timed from loading the model to the returned `datasets.Dataset`, hardneg in a fresh
temporary work directory (no cache from an earlier run). sentence-transformers retrieves and filters with the same
embeddings (the model is its own teacher); hardneg runs its stages: dense index, mine, bi-encoder teacher (the same
model), filter (exact duplicates of a positive + PercPos at 1 - relative_margin), relabel, export.
Writes bench/results/api_vs_st.json and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import beir_parser, positive_pairs, read_beir  # noqa: E402


def read_pairs(data: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """(anchors, positives, corpus texts) of a BEIR directory's qrels split: a row per qrels row with relevance > 0."""
    docs, queries, qrels = read_beir(data, split)
    pairs = positive_pairs(qrels, 1)
    return [queries[q] for q, _ in pairs], [docs[d] for _, d in pairs], list(docs.values())


def measure(ds) -> dict:
    rows = ds.to_list()
    return {
        "rows": len(rows),
        "distinct_query_negative_pairs": len({(r["anchor"], r["negative"]) for r in rows}),
        "queries_with_a_negative": len({r["anchor"] for r in rows}),
        "pairs_with_a_negative": len({(r["anchor"], r["positive"]) for r in rows}),
    }


def run_st(ds, corpus, model_path, args) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    start = time.perf_counter()
    model = SentenceTransformer(model_path, device="cpu")
    out = mine_hard_negatives(ds, model, corpus=corpus, relative_margin=args.relative_margin,
                              num_negatives=args.num_negatives, batch_size=args.batch_size, verbose=False)
    return {"wall_s": round(time.perf_counter() - start, 1), **measure(out)}


def run_hardneg(ds, corpus, model_path, args) -> dict:
    import hardneg

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hardneg-bench-") as work:
        out = hardneg.mine_hard_negatives(ds, corpus=corpus, model=model_path, relative_margin=args.relative_margin,
                                          num_negatives=args.num_negatives, batch_size=args.batch_size,
                                          work_dir=work, device="cpu", verbose=False)
    return {"wall_s": round(time.perf_counter() - start, 1), **measure(out)}


def main() -> None:
    ap = beir_parser(__doc__.split("\n")[0], "train", "BEIR directory (e.g. /work/shared/data/scifact)")
    ap.add_argument("--num-negatives", type=int, default=3)
    ap.add_argument("--relative-margin", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--order", default="st,hardneg", help="which side runs first")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "api_vs_st.json")
    args = ap.parse_args()

    import datasets
    import torch

    from hardneg.models import resolve

    torch.manual_seed(0)
    anchors, positives, corpus = read_pairs(args.data, args.split)
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    model_path = resolve("all-MiniLM-L6-v2")
    sides = {"sentence-transformers": run_st, "hardneg": run_hardneg}
    names = {"st": "sentence-transformers", "hardneg": "hardneg"}
    results = {}
    for key in args.order.split(","):
        name = names[key]
        print(f"running {name} ...", flush=True)
        results[name] = sides[name](ds, corpus, model_path, args)
        print(f"  {results[name]}", flush=True)
    record = {
        "data": str(args.data), "split": args.split, "pairs": len(anchors), "queries": len(set(anchors)),
        "corpus": len(corpus), "model": "all-MiniLM-L6-v2 (packaged)", "relative_margin": args.relative_margin,
        "num_negatives": args.num_negatives, "batch_size": args.batch_size, "order": args.order,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads(), "load_avg_at_end": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{record['pairs']} pairs, {record['queries']} queries, {record['corpus']} documents, "
          f"relative_margin={args.relative_margin}, num_negatives={args.num_negatives}\n")
    print("| side | wall s | triplet rows | distinct (query, negative) | queries with a negative |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']} | {r['rows']} | {r['distinct_query_negative_pairs']} | "
              f"{r['queries_with_a_negative']} of {record['queries']} |")


if __name__ == "__main__":
    main()
