"""What verifying a stage's files costs (issue 19): sha256 of a large part next to writing and reading it, in one run.

    PYTHONPATH=. python bench/verify_cost.py [--rows 5000000] [--npy-mb 1024]

Writes a `mined`-schema part of --rows rows (zstd Parquet, as stages write them) and a float32 .npy of --npy-mb MB
(a dense index's embeddings) into a temporary directory, then times, side by side: writing the part, reading it
back with pyarrow, and `hardneg.io.stagedir.file_sha256` of each file (cold of hardneg's memo; the page cache is
warm, as it is right after a stage writes its files). Prints one table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hardneg import schemas
from hardneg.io.stagedir import file_sha256, write_parquet


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--npy-mb", type=int, default=1024)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    q = rng.integers(0, n // 50 + 1, n)
    table = pa.table({
        "query_id": pa.array([f"q{x}" for x in q], pa.string()),
        "doc_id": pa.array([f"d{x}" for x in rng.integers(0, 10_000_000, n)], pa.string()),
        "rank": pa.array(np.tile(np.arange(1, 51, dtype=np.int32), n // 50 + 1)[:n]),
        "retriever": pa.array(["bm25"] * n, pa.string()),
        "retriever_score": pa.array(rng.random(n, dtype=np.float32)),
        "is_positive": pa.array(rng.random(n) < 0.02),
        "same_text_as_positive": pa.array(np.zeros(n, dtype=bool)),
    })
    table = schemas.conform(table, schemas.MINED, "bench")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        part = Path(tmp) / "part-00000.parquet"
        t_write = timed(lambda: write_parquet(part, table), repeat=1)
        t_read = timed(lambda: pq.read_table(part))
        t_hash = timed(lambda: file_sha256(part))
        npy = Path(tmp) / "embeddings.npy"
        rows = args.npy_mb * (1 << 20) // (384 * 4)
        np.save(npy, rng.random((rows, 384), dtype=np.float32))
        t_npy_hash = timed(lambda: file_sha256(npy))
        t_npy_load = timed(lambda: np.load(npy).sum())
        mb_part, mb_npy = part.stat().st_size / 2**20, npy.stat().st_size / 2**20
    print(f"{'file':<42}{'MiB':>8}{'write s':>9}{'read s':>9}{'sha256 s':>10}{'sha256 MiB/s':>14}")
    print(f"{f'part, {n} mined rows (zstd Parquet)':<42}{mb_part:>8.1f}{t_write:>9.2f}{t_read:>9.2f}{t_hash:>10.2f}"
          f"{mb_part / t_hash:>14.0f}")
    print(f"{f'embeddings.npy, {rows} x 384 float32':<42}{mb_npy:>8.1f}{'':>9}{t_npy_load:>9.2f}{t_npy_hash:>10.2f}"
          f"{mb_npy / t_npy_hash:>14.0f}")


if __name__ == "__main__":
    main()
