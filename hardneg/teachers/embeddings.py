"""Where a bi-encoder teacher gets its embeddings: each distinct text is encoded at most once per run, and not at all
when a dense index already holds it.

* `IndexEmbeddings`: the dense index `mine` searched (`INDEX/dense/embeddings.npy`, `queries.npy`), used only when
  its encoder's *resolved identity* equals the teacher's (`encoder_identity`): same model folder and weights, same
  max_seq_length (None resolves to the model's own), prompts, backend and encoder precision, embeddings stored in
  float32 and normalized. Then every score is a dot product of cached vectors and no model is loaded.
* `EmbeddingCache`: `CACHE/<identity hash>/` holding `encoder.json` (the identity), then one chunk per write:
  `emb-<key>.npy` (float32, normalized) and `keys-<key>.parquet` (kind `query`/`document`, 64-bit text hash, row),
  the keys file written last, so a chunk without one is ignored (and a killed run resumes from the chunks it
  finished). Workers and shards sharing the directory each write their own chunks and rescan it before encoding.
  A write that fails (full disk, read-only directory) is reported once and the run goes on without caching.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from hardneg.errors import HardnegError
from hardneg.io.data import text_hash
from hardneg.io.stagedir import atomic_file, atomic_write_bytes, write_parquet
from hardneg.models import own_max_seq_length, resolve, weights_digest
from hardneg.retrievers.dense import load_embeddings, load_query_embeddings, read_params

KINDS = ("query", "document")


def _identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def encoder_identity(model: str, max_seq_length: int | None, query_prompt: str, doc_prompt: str, backend: str,
                     dtype: str, allow_download: bool = False) -> dict | None:
    """What decides the embeddings a sentence-transformers encoder gives (not batch size or device), resolved: the
    model folder and a hash of its weights, the max_seq_length it really uses. None when the model cannot be
    resolved here (it is then loaded, and fails, as before)."""
    try:
        target = resolve(model, allow_download)
    except HardnegError:
        return None
    return {"model": target, "weights_sha256": weights_digest(target),
            "max_seq_length": max_seq_length or own_max_seq_length(target),
            "query_prompt": query_prompt or "", "doc_prompt": doc_prompt or "", "backend": backend or "torch",
            "dtype": "float32" if dtype in (None, "auto") else dtype, "normalized": True}


def teacher_encoder_identity(cfg) -> dict | None:
    return encoder_identity(cfg.model, cfg.max_seq_length, cfg.query_prompt, cfg.doc_prompt, cfg.backend, cfg.dtype,
                            cfg.allow_download)


def index_encoder_identity(index_dir: Path) -> dict | None:
    """The resolved identity of a dense index's encoder, from `dense/params.json`; None when the index has no dense
    embeddings, stores them in float16 (not what a float32 teacher computes), or predates the fields needed."""
    params = read_params(index_dir)
    if params is None:
        return None
    if params.get("dtype") != "float32" or not params.get("normalized") or not params.get("encoder_dtype"):
        return None
    ident = encoder_identity(params["model"], params.get("max_seq_length"), params.get("query_prompt", ""),
                             params.get("doc_prompt", ""), params.get("backend", "torch"), params["encoder_dtype"])
    if ident is None:
        return None
    ident["weights_sha256"] = params.get("weights_sha256")  # what it was built with, not what is installed now
    return ident


class IndexEmbeddings:
    """Documents (by doc_id) and queries (by text) embedded by a dense index; `get` returns (vectors, found)."""

    source = "index"

    def __init__(self, index_dir: Path):
        self.dir = Path(index_dir)
        ids, self.doc_emb, _ = load_embeddings(index_dir)
        self.doc_rows = pl.DataFrame({"id": pl.Series(ids, dtype=pl.String),
                                      "_r": np.arange(len(ids), dtype=np.int64)})
        texts, self.query_emb = load_query_embeddings(index_dir)
        self.query_row = {t: i for i, t in enumerate(texts)}

    def get(self, kind: str, texts: list[str], ids: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        if kind == "query":
            rows = np.fromiter((self.query_row.get(t, -1) for t in texts), dtype=np.int64, count=len(texts))
            emb = self.query_emb
        else:
            if ids is None:
                return np.zeros((len(texts), 0), np.float32), np.zeros(len(texts), bool)
            rows = (pl.DataFrame({"id": pl.Series(ids, dtype=pl.String)}).join(self.doc_rows, on="id", how="left",
                                                                               maintain_order="left")
                    ["_r"].fill_null(-1).to_numpy())
            emb = self.doc_emb
        found = rows >= 0
        return _gather(emb, rows, found), found


def _gather(emb: np.ndarray, rows: np.ndarray, found: np.ndarray) -> np.ndarray:
    """emb[rows] as float32 for the found rows (zeros elsewhere), reading a memory map in row order."""
    out = np.zeros((len(rows), emb.shape[1]), dtype=np.float32)
    idx = np.flatnonzero(found)
    if len(idx):
        order = idx[np.argsort(rows[idx], kind="stable")]
        out[order] = emb[rows[order]]
    return out


class EmbeddingCache:
    """A bi-encoder's embeddings of texts, keyed by (kind, text hash), in `root/<identity hash>/`."""

    source = "cache"
    KEYS = pa.schema([("kind", pa.string()), ("text_hash", pa.uint64()), ("row", pa.int64())])

    @staticmethod
    def path(root: Path, identity: dict) -> Path:
        return Path(root) / _identity_digest({"embeddings": identity})

    def __init__(self, root: Path, identity: dict):
        self.dir = self.path(root, identity)
        self.identity = identity
        self.chunks: dict[str, np.ndarray] = {}  # chunk name -> memory-mapped embeddings
        self.keys = pl.DataFrame(schema={"kind": pl.String, "text_hash": pl.UInt64, "row": pl.Int64,
                                         "chunk": pl.String})
        self.writable = True
        self.refresh()

    def refresh(self) -> None:
        """Pick up chunks written since (by this or another process)."""
        new = []
        for keys in sorted(self.dir.glob("keys-*.parquet")):
            name = keys.name[len("keys-"):-len(".parquet")]
            if name in self.chunks:
                continue
            try:
                emb = np.load(self.dir / f"emb-{name}.npy", mmap_mode="r")
                df = pl.read_parquet(keys)
            except (OSError, ValueError):
                continue  # a chunk another process is writing, or a damaged one: encode again
            self.chunks[name] = emb
            new.append(df.with_columns(pl.lit(name).alias("chunk")))
        if new:
            self.keys = pl.concat([self.keys, *new]).unique(["kind", "text_hash"], keep="first", maintain_order=True)

    def get(self, kind: str, texts: list[str], ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        hashes = np.fromiter((text_hash(t) for t in texts), dtype=np.uint64, count=len(texts))
        want = pl.DataFrame({"kind": [kind] * len(texts), "text_hash": hashes})
        hit = want.with_row_index("_i").join(self.keys, on=["kind", "text_hash"], how="inner")
        found = np.zeros(len(texts), bool)
        out = None
        for (chunk,), part in hit.group_by(["chunk"]):
            emb = self.chunks[chunk]
            if out is None:
                out = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            i = part["_i"].to_numpy()
            r = part["row"].to_numpy()
            order = np.argsort(r, kind="stable")
            out[i[order]] = emb[r[order]]
            found[i] = True
        return (out if out is not None else np.zeros((len(texts), 0), np.float32)), found

    def add(self, kind: str, texts: list[str], emb: np.ndarray) -> None:
        if not len(texts) or not self.writable:
            return
        hashes = np.fromiter((text_hash(t) for t in texts), dtype=np.uint64, count=len(texts))
        name = hashlib.sha256(kind.encode() + hashes.tobytes()).hexdigest()[:24]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            ident = self.dir / "encoder.json"
            if not ident.exists():
                atomic_write_bytes(ident, (json.dumps(self.identity, indent=2, sort_keys=True) + "\n").encode())
            with atomic_file(self.dir / f"emb-{name}.npy", unique=True) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(emb, dtype=np.float32))
            write_parquet(self.dir / f"keys-{name}.parquet",
                          pa.table({"kind": [kind] * len(texts), "text_hash": hashes,
                                    "row": np.arange(len(texts), dtype=np.int64)}, schema=self.KEYS))
        except OSError as exc:
            self.writable = False
            print(f"warning: {self.dir}: cannot write the embedding cache ({exc.strerror}); going on without it",
                  file=sys.stderr)
            return
        self.refresh()
