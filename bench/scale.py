"""Index and mine generated corpora of growing size with BM25 (bm25s); wall time and peak RSS of every command.

Each step is its own `hardneg` process; its peak RSS is that process's own ru_maxrss (os.wait4), so steps do not
mask each other. Corpora come from bench/gen_corpus.py (generated into --work when missing, not timed).

    python bench/scale.py --sizes 100000 1000000 --queries 2000 --work /tmp/hnbench
    python bench/scale.py --sizes 100000 --queries 1000 4000 16000 --work /tmp/hnbench   # memory vs queries

With several --queries, each (size, queries) pair gets its own generated collection (same generator and seed, so
the same length and vocabulary distributions; the documents differ with the number of queries drawn first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchutil import timed  # noqa: E402


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, nargs="+", default=[2000])
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--work", type=Path, required=True, help="where corpora and runs go (needs ~3 GB for 1M)")
    ap.add_argument("--hardneg", default=str(Path(sys.executable).with_name("hardneg")))
    ap.add_argument("--json", type=Path, default=HERE / "results" / "scale.json")
    args = ap.parse_args()

    rows = []
    for n, q in [(n, q) for n in args.sizes for q in args.queries]:
        tag = label(n) if q == 2000 else f"{label(n)}-{q}q"
        src = args.work / f"synth-{tag}"
        if not (src / "corpus.jsonl").exists():
            subprocess.run([sys.executable, str(HERE / "gen_corpus.py"), "--docs", str(n), "--queries",
                            str(q), "--out", str(src)], check=True)
        run = args.work / f"run-{tag}"
        log = args.work / f"scale-{tag}.log"
        hn = [args.hardneg]
        steps = {
            "import": hn + ["import", str(src), "--out", str(run / "data"), "--overwrite"],
            "index": hn + ["index", str(run / "data"), "--out", str(run / "index"), "--retriever", "bm25",
                           "--overwrite"],
            "mine": hn + ["mine", str(run / "index"), "--data", str(run / "data"), "--out", str(run / "mined"),
                          "--top-k", str(args.top_k), "--overwrite"],
        }
        row = {"documents": n, "queries": q, "top_k": args.top_k}
        for name, cmd in steps.items():
            row[name] = timed(cmd, log)
            print(f"{label(n)}, {q} queries, {name}: {row[name]}", flush=True)
        rows.append(row)

    print(f"\n| documents | queries | import s (CPU s) | import peak RSS | index s (CPU s) | index peak RSS | "
          f"mine top-{args.top_k} s (CPU s) | mine peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[s]['wall_s']:.1f} ({r[s]['cpu_s']:.1f}) | {r[s]['peak_rss_mib']:,.0f} MiB" for s in steps]
        print(f"| {r['documents']:,} | {r['queries']:,} | " + " | ".join(cells) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": " ".join(sys.argv), "machine": f"{platform.machine()}, "
                                     f"{os.cpu_count()} CPUs", "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
