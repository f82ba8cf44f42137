"""hardneg's `index` + `mine` vs sentence-transformers' `mine_hard_negatives`, and bm25s vs rank-bm25, on NFCorpus.

One run, same model (the packaged all-MiniLM-L6-v2), same data, same top-k, same encoding batch size, exact faiss
search on both sides. Every measured step is its own process, timed from the outside (wall clock) with its own
peak RSS (os.wait4), so a side's memory is its own and warm runs really start cold processes:

* hardneg cold: `hardneg index --retriever dense --backend B` + `hardneg mine --top-k K` (`hardneg import` listed
  apart), once per encoder backend B (`--backends`, default torch, onnx, onnx-int8); the ONNX graphs are exported
  first, into a fresh model cache in the work directory, by their own timed step (once per machine and model, like
  a download), so the cold rows time the runtime and the export is reported beside them;
* hardneg warm: a second `hardneg mine` (other output, other sampling) on the same index: the corpus embeddings
  come from the cache beside the index, only queries are encoded;
* fidelity of each backend against torch: max |difference| and min cosine of the corpus embeddings (from the
  indexes) and of the query embeddings, and the mean top-K overlap of the mined candidates per query;
* ST cold: a fresh process loads the BEIR files and calls `mine_hard_negatives(..., range_max=K,
  num_negatives=K, use_faiss=True, cache_folder=C)` with an empty C (saving two .npy files on the way);
  ST warm (cache_folder) = the same call in a fresh process once C is filled; ST warm (rerun) = the call again in a
  fresh process without cache_folder, as a user reruns a script;
* bm25s vs rank-bm25: index and retrieve the top 100 of every query with hardneg's two BM25 backends (same
  tokenizer; always the whole collection), each in its own process; overlap = mean |top-100 ∩ top-100| / 100
  over queries (bm25s scores with Lucene's idf, rank-bm25 with Okapi's, so they differ in the tail).

    python bench/mining.py --data /work/shared/data/nfcorpus
    python bench/mining.py --data /work/shared/data/nfcorpus --backends torch,onnx   # fewer backends
    python bench/mining.py --data /work/shared/data/nfcorpus --max-queries 10 --max-docs 600   # a seeded slice
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchutil import NFCORPUS, beir_parser, data_slice, fresh_workdir, read_beir_pairs, timed  # noqa: E402


def side_st(args) -> None:
    """One sentence-transformers run (a separate process)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from hardneg.models import resolve

    corpus, queries, pairs = read_beir_pairs(args.data, args.split)
    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"), device="cpu")
    dataset = Dataset.from_dict({"query": [queries[q] for q, _ in pairs], "positive": [corpus[d] for _, d in pairs]})
    out = mine_hard_negatives(dataset, model, corpus=list(corpus.values()), range_max=args.top_k,
                              num_negatives=args.top_k, use_faiss=True, batch_size=args.batch_size,
                              output_format="labeled-list", output_scores=True, verbose=False,
                              cache_folder=str(args.cache) if args.cache else None)
    print(f"ST rows: {len(out)}")


def side_bm25(args) -> None:
    """Index and retrieve with one BM25 backend (a separate process); writes timings and the top 100."""
    import numpy as np

    from hardneg.config import IndexConfig
    from hardneg.registry import RETRIEVERS, lookup

    corpus, queries, pairs = read_beir_pairs(args.data, args.split)
    qids = sorted({q for q, _ in pairs})
    cls = lookup(RETRIEVERS, args.backend, "retriever")
    cfg = IndexConfig(retriever=args.backend)
    index_dir = Path(tempfile.mkdtemp(dir=args.work))
    t0 = time.perf_counter()
    cls.build(list(corpus.values()), index_dir, cfg)
    t1 = time.perf_counter()
    retriever = cls(index_dir, cfg)
    t2 = time.perf_counter()
    idx = retriever.search([queries[q] for q in qids], 100)[0]
    t3 = time.perf_counter()
    np.save(args.work / f"top100-{args.backend}.npy", idx)
    (args.work / f"bm25-{args.backend}.json").write_text(json.dumps(
        {"index_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3), "retrieve_s": round(t3 - t2, 3),
         "queries": len(qids), "documents": len(corpus)}))
    shutil.rmtree(index_dir)


def side_export(args) -> None:
    """Export (and quantize) the packaged model's ONNX graph into $HARDNEG_MODELS (a separate process)."""
    from hardneg.models import load_sentence_transformer

    load_sentence_transformer("all-MiniLM-L6-v2", "cpu", None, False, backend=args.backend)


def side_queries(args) -> None:
    """Encode the dense queries with each backend, as `mine` does, into work/queries-<backend>.npy."""
    import numpy as np

    from hardneg.config import IndexConfig
    from hardneg.retrievers.dense import encode, load_encoder

    _, queries, pairs = read_beir_pairs(args.data, args.split)
    texts = [queries[q] for q in sorted({q for q, _ in pairs})]
    for backend in args.backend.split(","):
        cfg = IndexConfig(retriever="dense", device="cpu", backend=backend, batch_size=args.batch_size)
        np.save(args.work / f"queries-{backend}.npy", encode(load_encoder(cfg), texts, cfg, "", "queries"))


def side_ceiling(args) -> None:
    """The fp32 ceiling: floating-point work of encoding the corpus and queries (counted on the batches as
    sentence-transformers forms them: length-sorted, padded per batch, truncated at the model's max_seq_length) and
    this machine's best measured fp32 matrix-product rate (all threads, torch's BLAS, the model's own linear-layer
    shapes and a large square product). ST's cold wall time / (work / rate) is the cold ratio of an exact (float32)
    miner that ran every operation at that rate: a yardstick for how much an fp32 runtime could still win, not a
    hard bound (short products may run at a boosted clock, and the rate varies between runs)."""
    import torch

    from hardneg.models import load_sentence_transformer

    corpus, queries, pairs = read_beir_pairs(args.data, args.split)
    model = load_sentence_transformer("all-MiniLM-L6-v2", "cpu", None, False)
    c = model[0].auto_model.config
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    flops = padded = real = 0
    for texts in (list(dict.fromkeys(corpus.values())), list(dict.fromkeys(queries[q] for q, _ in pairs))):
        texts = sorted(texts, key=len, reverse=True)
        for s in range(0, len(texts), args.batch_size):
            mask = tokenize(texts[s : s + args.batch_size])["attention_mask"]
            b, length = mask.shape
            padded, real = padded + b * length, real + int(mask.sum())
            # per token and layer: Q, K, V, output projections and the two feed-forward products (2 flops per
            # multiply-add), plus the attention scores and their weighted sum over `length` positions
            flops += b * length * layers * (2 * (4 * h * h + 2 * h * inter) + 4 * length * h)
    rates = {}
    rows = args.batch_size * model.max_seq_length
    for name, (m, k, n) in {"qkvo": (rows, h, h), "ffn_in": (rows, h, inter), "ffn_out": (rows, inter, h),
                            "square_4096": (4096, 4096, 4096)}.items():
        a, w = torch.randn(m, k), torch.randn(k, n)
        best = float("inf")
        for _ in range(7):
            t = time.perf_counter()
            a @ w
            best = min(best, time.perf_counter() - t)
        rates[name] = round(2 * m * k * n / best / 1e9, 1)
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")] if Path("/proc/cpuinfo").exists() else []
    # two 256-bit FMA units per core (AMD Zen 2 and later, Intel Haswell and later): 2 x 8 lanes x 2 flops per cycle
    nominal = round(32 * len(mhz) * (sum(mhz) / len(mhz)) / 1e3, 1) if mhz else None
    out = {"gflop": round(flops / 1e9, 1), "nominal_fma_peak_gflop_per_s": nominal, "padded_tokens": padded,
           "real_tokens": real, "threads": torch.get_num_threads(), "matmul_gflop_per_s": rates,
           "best_gflop_per_s": max(rates.values()), "min_encode_s": round(flops / 1e9 / max(rates.values()), 1)}
    (args.work / "ceiling.json").write_text(json.dumps(out, indent=2) + "\n")


def fidelity(work: Path, backend: str, top_k: int) -> dict:
    """Embeddings and mined top-k of `backend` against torch's."""
    import numpy as np
    import polars as pl

    from hardneg import schemas
    from hardneg.io.stagedir import read_stage

    out = {}
    for what, a, b in (("corpus", work / "index-torch" / "dense" / "embeddings.npy",
                        work / f"index-{backend}" / "dense" / "embeddings.npy"),
                       ("queries", work / "queries-torch.npy", work / f"queries-{backend}.npy")):
        a, b = np.load(a), np.load(b)
        out[f"{what}_max_abs_diff"] = float(np.abs(a - b).max())
        out[f"{what}_min_cosine"] = round(float((a * b).sum(axis=1).min()), 6)

    def tops(path):
        df = pl.from_arrow(read_stage(path, "mine", schemas.MINED)).filter(pl.col("rank").is_not_null())
        return {q: set(g["doc_id"]) for (q,), g in df.group_by("query_id")}

    ref, got = tops(work / "mined-torch"), tops(work / f"mined-{backend}")
    overlap = [len(ref[q] & got.get(q, set())) / max(1, min(top_k, len(ref[q]))) for q in ref]
    out[f"top{top_k}_overlap"] = round(float(np.mean(overlap)), 4)
    out[f"top{top_k}_overlap_min"] = round(float(np.min(overlap)), 4)
    out["queries"] = len(ref)
    return out


def main() -> None:
    ap = beir_parser(__doc__, data_help=NFCORPUS, raw=True, slices=True)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64, help="encoding batch size, both sides")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "mining.json")
    ap.add_argument("--backends", default="torch,onnx,onnx-int8",
                    help="hardneg encoder backends to time cold, comma-separated (torch is always run: the reference)")
    ap.add_argument("--side", choices=["st", "bm25", "export", "queries", "ceiling"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "st":
        return side_st(args)
    if args.side == "bm25":
        return side_bm25(args)
    if args.side == "export":
        return side_export(args)
    if args.side == "queries":
        return side_queries(args)
    if args.side == "ceiling":
        return side_ceiling(args)

    import numpy as np

    work = fresh_workdir(args.work, "hardneg-bench-")
    log = work / "bench.log"
    full_data = args.data
    args.data = data_slice(args, work / "slice")
    backends = ["torch"] + [b for b in dict.fromkeys(args.backends.split(",")) if b and b != "torch"]
    os.environ["HARDNEG_MODELS"] = str(work / "models")  # a fresh model cache: the ONNX exports are timed here
    hn = [str(Path(sys.executable).with_name("hardneg"))]
    me = [sys.executable, str(Path(__file__).resolve()), "--data", str(args.data), "--split", args.split,
          "--top-k", str(args.top_k), "--batch-size", str(args.batch_size), "--work", str(work)]
    k, bs = str(args.top_k), str(args.batch_size)
    data = str(work / "data")
    r: dict = {"load_average_start": os.getloadavg()}

    def step(name, cmd):
        load = os.getloadavg()[0]
        r[name] = timed(cmd, log)
        r[name]["load_1min_before"] = round(load, 2)
        r[name]["load_1min_after"] = round(os.getloadavg()[0], 2)
        print(f"{name}: {r[name]}", flush=True)

    step("hardneg_import", hn + ["import", str(args.data), "--out", data, "--split", args.split])
    for b in backends[1:]:  # one-time export (and int8 quantization) of the graphs, before any cold row
        step(f"onnx_export_{b}", me + ["--side", "export", "--backend", b])
    for b in backends:
        step(f"hardneg_index_{b}", hn + ["index", data, "--out", str(work / f"index-{b}"), "--retriever", "dense",
                                         "--batch-size", bs, "--device", "cpu", "--backend", b])
        step(f"hardneg_mine_{b}", hn + ["mine", str(work / f"index-{b}"), "--data", data, "--out",
                                        str(work / f"mined-{b}"), "--top-k", k])
    step("st_cold", me + ["--side", "st", "--cache", str(work / "st-cache")])  # fills ST's cache_folder
    for b in backends:
        step(f"hardneg_mine_warm_{b}", hn + ["mine", str(work / f"index-{b}"), "--data", data, "--out",
                                             str(work / f"mined-2-{b}"), "--top-k", k, "--sample", "10",
                                             "--sampling", "random"])
    step("st_warm_cache_folder", me + ["--side", "st", "--cache", str(work / "st-cache")])
    for backend in ("bm25", "rank-bm25"):  # BM25 is cheap: always on the whole collection, never the slice
        step(f"{backend}_process", me[:2] + ["--data", str(full_data)] + me[4:] + ["--side", "bm25", "--backend", backend])
        r[backend] = json.loads((work / f"bm25-{backend}.json").read_text())
    step("st_warm_rerun", me + ["--side", "st"])
    step("query_embeddings", me + ["--side", "queries", "--backend", ",".join(backends)])
    step("ceiling", me + ["--side", "ceiling"])
    r["ceiling"] = json.loads((work / "ceiling.json").read_text())
    r["load_average_end"] = os.getloadavg()
    a, b = np.load(work / "top100-bm25.npy"), np.load(work / "top100-rank-bm25.npy")
    overlap = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, min(100, (x >= 0).sum(), (y >= 0).sum()))
               for x, y in zip(a, b)]
    r["bm25_top100_overlap"] = round(float(np.mean(overlap)), 4)
    r["fidelity_vs_torch"] = {b: fidelity(work, b, args.top_k) for b in backends[1:]}

    st = r["st_cold"]
    cold = {b: {"wall_s": round(r[f"hardneg_index_{b}"]["wall_s"] + r[f"hardneg_mine_{b}"]["wall_s"], 2),
                "cpu_s": round(r[f"hardneg_index_{b}"]["cpu_s"] + r[f"hardneg_mine_{b}"]["cpu_s"], 2),
                "peak_rss_mib": max(r[f"hardneg_index_{b}"]["peak_rss_mib"], r[f"hardneg_mine_{b}"]["peak_rss_mib"])}
            for b in backends}
    r["hardneg_cold"] = cold
    hn_warm = r["hardneg_mine_warm_torch"]["wall_s"]
    ratios = {
        **{f"cold_{b}": round(st["wall_s"] / c["wall_s"], 2) for b, c in cold.items()},
        **{f"cold_cpu_{b}": round(st["cpu_s"] / c["cpu_s"], 2) for b, c in cold.items()},
        "cold_including_import": round(st["wall_s"] / (cold["torch"]["wall_s"] + r["hardneg_import"]["wall_s"]), 2),
        "warm_rerun": round(r["st_warm_rerun"]["wall_s"] / hn_warm, 2),
        "warm_vs_st_cache_folder": round(r["st_warm_cache_folder"]["wall_s"] / hn_warm, 2),
        "fp32_ceiling": round(r["st_cold"]["wall_s"] / r["ceiling"]["min_encode_s"], 2),
        "fp32_ceiling_nominal_peak": round(r["st_cold"]["wall_s"] * (r["ceiling"]["nominal_fma_peak_gflop_per_s"] or 0)
                                           / r["ceiling"]["gflop"], 2),
        "bm25s_index": round(r["rank-bm25"]["index_s"] / r["bm25"]["index_s"], 1),
        "bm25s_retrieval": round(r["rank-bm25"]["retrieve_s"] / r["bm25"]["retrieve_s"], 1),
    }
    ratios["cold"] = ratios["cold_torch"]  # the name earlier results used
    rows = [(f"dense, cold, --backend {b}: hardneg index + mine vs ST mine_hard_negatives", c["wall_s"],
             c["peak_rss_mib"], st["wall_s"], st["peak_rss_mib"], ratios[f"cold_{b}"], "1.5x")
            for b, c in cold.items()]
    rows += [
        ("dense, warm: second hardneg mine vs ST rerun (fresh process)", hn_warm,
         r["hardneg_mine_warm_torch"]["peak_rss_mib"], r["st_warm_rerun"]["wall_s"], r["st_warm_rerun"]["peak_rss_mib"],
         ratios["warm_rerun"], "5x"),
        ("dense, warm: second hardneg mine vs ST rerun with its cache_folder", hn_warm,
         r["hardneg_mine_warm_torch"]["peak_rss_mib"], r["st_warm_cache_folder"]["wall_s"],
         r["st_warm_cache_folder"]["peak_rss_mib"], ratios["warm_vs_st_cache_folder"], "-"),
    ]
    dense_corpus, dense_queries, dense_pairs = read_beir_pairs(args.data, args.split)
    r["dense_data"] = {"documents": len(dense_corpus), "queries": len({q for q, _ in dense_pairs}),
                       "pairs": len(dense_pairs), "slice": args.data != full_data}
    print(f"\ndense: {full_data.name} {args.split}{' seeded slice' if args.data != full_data else ''}, "
          f"{r['dense_data']['documents']} documents, {r['dense_data']['queries']} queries, top-k {k}, all-MiniLM-L6-v2, "
          f"batch {bs}; BM25: {full_data.name} {args.split}, {r['bm25']['documents']} documents, "
          f"{r['bm25']['queries']} queries; {os.cpu_count()} CPUs; load average {r['load_average_start'][0]:.2f} at "
          f"the start, {r['load_average_end'][0]:.2f} at the end\n")
    print("| comparison | hardneg s | hardneg peak RSS | other s | other peak RSS | speed-up | target |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, hs, hr, os_, orr, ratio, target in rows:
        print(f"| {name} | {hs:.1f} | {hr:,.0f} MiB | {os_:.1f} | {orr:,.0f} MiB | {ratio:.2f}x | {target} |")
    print(f"| BM25 index: bm25s vs rank-bm25 | {r['bm25']['index_s']:.2f} | {r['bm25_process']['peak_rss_mib']:,.0f} MiB | "
          f"{r['rank-bm25']['index_s']:.2f} | {r['rank-bm25_process']['peak_rss_mib']:,.0f} MiB | "
          f"{ratios['bm25s_index']:.1f}x | - |")
    print(f"| BM25 retrieval top-100: bm25s vs rank-bm25 (overlap {r['bm25_top100_overlap']:.1%}) | "
          f"{r['bm25']['retrieve_s']:.3f} | | {r['rank-bm25']['retrieve_s']:.3f} | | {ratios['bm25s_retrieval']:.1f}x | 20x |")
    print("\ncold, CPU seconds (less sensitive to other jobs than wall time): "
          + "; ".join(f"{b} {c['cpu_s']:.0f} s ({ratios[f'cold_cpu_{b}']:.2f}x)" for b, c in cold.items())
          + f"; ST {st['cpu_s']:.0f} s")
    for b in backends[1:]:
        print(f"one-time export of the {b} graph: {r[f'onnx_export_{b}']['wall_s']:.1f} s (cached in the model cache)")
    print(f"\nfidelity against --backend torch (top-{k} overlap: mean over queries of shared candidates / {k}):")
    print(f"| backend | corpus max abs diff | corpus min cosine | queries max abs diff | queries min cosine | "
          f"top-{k} overlap (mean) | top-{k} overlap (worst query) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b, f in r["fidelity_vs_torch"].items():
        print(f"| {b} | {f['corpus_max_abs_diff']:.1e} | {f['corpus_min_cosine']:.6f} | {f['queries_max_abs_diff']:.1e} | "
              f"{f['queries_min_cosine']:.6f} | {f[f'top{k}_overlap']:.2%} | {f[f'top{k}_overlap_min']:.0%} |")
    ce = r["ceiling"]
    print(f"\nfp32 ceiling: encoding the corpus and queries is {ce['gflop']:,.0f} GFLOP ({ce['padded_tokens']:,} padded "
          f"tokens, {ce['real_tokens']:,} real); this machine's best fp32 matrix product runs at "
          f"{ce['best_gflop_per_s']} GFLOP/s ({ce['threads']} threads; {ce['matmul_gflop_per_s']}), so a float32 "
          f"encoder running every operation at that rate would take {ce['min_encode_s']:.0f} s, "
          f"{ratios['fp32_ceiling']:.2f}x faster than ST's {st['wall_s']:.0f} s cold run (ST itself runs at "
          f"{ce['gflop'] / st['wall_s']:.0f} GFLOP/s end to end). A yardstick, not a bound: the rate of a short "
          f"product varies between runs, and CPUs that boost above their nominal clock can beat it")
    if ce["nominal_fma_peak_gflop_per_s"]:
        print(f"at the CPUs' nominal clock their fp32 FMA peak is {ce['nominal_fma_peak_gflop_per_s']} GFLOP/s: "
              f"{ratios['fp32_ceiling_nominal_peak']:.2f}x would be the bound for a perfect kernel")
    print(f"\nhardneg import (once per dataset, not in the ratios): {r['hardneg_import']['wall_s']:.1f} s; "
          f"cold ratio including it: {ratios['cold_including_import']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": "python bench/mining.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "top_k": args.top_k, "backends": backends,
        "steps": r, "ratios": ratios,
    }, indent=2) + "\n")

if __name__ == "__main__":
    main()
