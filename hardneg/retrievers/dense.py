"""Dense retrieval: sentence-transformers embeddings cached on disk, searched with faiss in query batches.

The corpus is encoded once, in chunks written atomically to `dense/chunks/emb-NNNNN.npy` (a killed `index` resumes
at the first missing chunk), then assembled into `dense/embeddings.npy` (float32 or float16, read memory-mapped)
with `dense/params.json` naming the model, encoder backend (torch, onnx, onnx-int8), prompt, normalization,
max_seq_length, dtype and the sha256 of the texts and ids. The dataset's queries (those with a qrels row) are encoded
at index time too, into `dense/queries.npy` with their texts in `dense/queries.parquet`: `mine` must use the dataset
the index was built from, so it finds every query there and loads no model (a query missing from that cache is
encoded with the index's model and backend, loaded on first use).
`flat` search is exact and built from the cache at load time; `ivf` and `hnsw` are built once at index time and
saved as `dense/faiss.index`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, run_units
from hardneg.io.stagedir import atomic_file, atomic_write_bytes
from hardneg.models import load_sentence_transformer, resolve, weights_digest

ADD_BATCH = 65536  # vectors converted to float32 and handed to faiss at a time
# a dense index's files, relative to the index directory (written by `Dense.build` and `hardneg.stages.index`)
EMBEDDINGS = "dense/embeddings.npy"  # the corpus, in doc_ids.parquet's order
PARAMS = "dense/params.json"
QUERIES = "dense/queries.npy"  # the query cache; its texts in QUERY_TEXTS
QUERY_TEXTS = "dense/queries.parquet"


# -- reading a dense index: every reader of its files goes through these -------------------------------------------

def has_embeddings(index_dir: Path) -> bool:
    """Whether `index_dir` holds dense document embeddings (a dense or hybrid index, assembled)."""
    return (Path(index_dir) / EMBEDDINGS).exists()


def read_params(index_dir: Path) -> dict | None:
    """A dense index's params.json (model, backend, prompts, dtype, text_sha256, ...); None when it has none."""
    try:
        return json.loads((Path(index_dir) / PARAMS).read_text())
    except (OSError, ValueError):
        return None


def load_embeddings(index_dir: Path, ids: bool = True) -> tuple[list[str] | None, np.ndarray, dict]:
    """(doc ids, document embeddings memory-mapped, params) of a dense index; row i of the embeddings is the document
    ids[i]. `ids = False` skips reading the ids (None)."""
    index_dir = Path(index_dir)
    params = read_params(index_dir)
    if params is None:
        raise HardnegError(f"{index_dir}: has no readable {PARAMS}; pass an index built with --retriever dense or "
                           f"hybrid, or rebuild it with --overwrite")
    doc_ids = None
    if ids:
        doc_ids = pq.read_table(index_dir / "doc_ids.parquet", columns=["doc_id"])["doc_id"].to_pylist()
    return doc_ids, np.load(index_dir / EMBEDDINGS, mmap_mode="r"), params


def load_query_embeddings(index_dir: Path) -> tuple[list[str], np.ndarray]:
    """(query texts, their embeddings memory-mapped) of a dense index's query cache."""
    texts = pq.read_table(Path(index_dir) / QUERY_TEXTS)["text"].to_pylist()
    return texts, np.load(Path(index_dir) / QUERIES, mmap_mode="r")



def text_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def encode(model, texts: list[str], cfg, prompt: str, desc: str) -> np.ndarray:
    texts = [prompt + t for t in texts] if prompt else texts
    emb = model.encode(
        texts,
        batch_size=cfg.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=len(texts) > cfg.batch_size,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)


def load_encoder(cfg):
    """The sentence-transformers model of `cfg` on its backend (torch, in half precision on CUDA; or onnxruntime)."""
    backend = getattr(cfg, "backend", "torch")
    model = load_sentence_transformer(cfg.model, cfg.device, cfg.max_seq_length, cfg.allow_download, backend=backend)
    if backend == "torch" and model.device.type == "cuda":
        model.half()
    return model


def backend_is_torch(cfg) -> bool:
    return getattr(cfg, "backend", "torch") == "torch"


class EncodeWorker:
    """Encodes one unit of `hardneg.executor`: a chunk of documents, or the index's queries; the model is loaded once
    per process. It records the model's resolved max_seq_length in `<dense dir>/encoder.json` for params.json."""

    def __init__(self, cfg, dense_dir: Path):
        self.cfg = cfg
        self.model = load_encoder(cfg)
        Path(dense_dir).mkdir(parents=True, exist_ok=True)
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.") if backend_is_torch(cfg) else "float32"
        info = json.dumps({"max_seq_length": self.model.max_seq_length, "dtype": dtype}).encode()
        atomic_write_bytes(Path(dense_dir) / "encoder.json", info)

    def __call__(self, unit: tuple[str, list[str]]) -> tuple[np.ndarray, dict]:
        kind, texts = unit
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32), {}
        if kind == "query":
            return encode(self.model, texts, self.cfg, self.cfg.query_prompt, "encoding queries"), {}
        emb = encode(self.model, texts, self.cfg, self.cfg.doc_prompt, "encoding corpus")
        return emb.astype(self.cfg.embedding_dtype), {}


def chunk_units(texts: list[str], cfg) -> list[tuple[str, list[str]]]:
    """The corpus encoding units: (chunk file relative to the index directory, its texts)."""
    size = cfg.encode_chunk_size
    return [(f"dense/chunks/emb-{c:05d}.npy", texts[c * size : (c + 1) * size])
            for c in range(max(1, math.ceil(len(texts) / size)))]


def save_npy(path: Path, array: np.ndarray) -> int:
    """An encoded chunk as the executors write it (`hardneg.executor.Save`): atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return len(array)


def encode_units(index_dir: Path, texts: list[str], cfg, execution, queries: list[str] | None = None) -> dict:
    """Encode, with `execution`, the corpus chunks not yet written (nor already assembled into embeddings.npy) and,
    given `queries` (distinct texts, without the prompt), the query cache if it is not written yet."""
    index_dir = Path(index_dir).absolute()
    assembled = has_embeddings(index_dir)
    units = [(name, ("document", chunk)) for name, chunk in chunk_units(texts, cfg)]
    if queries is not None:
        units.append((QUERIES, ("query", queries)))
    return run_units(units, EncodeWorker, {"cfg": cfg, "dense_dir": index_dir / "dense"}, index_dir, save_npy,
                     execution, lambda name: (index_dir / name).exists() or (assembled and name != QUERIES),
                     "index: encoding corpus chunks")


def encode_corpus(texts: list[str], dense_dir: Path, cfg) -> tuple[Path, dict]:
    """Encode the missing chunks of `texts` in this process (none, after `encode_units`), then assemble
    `dense_dir/embeddings.npy` without holding more than one chunk in memory. Returns (path, params)."""
    dense_dir = Path(dense_dir)
    encode_units(dense_dir.parent, texts, cfg, LOCAL)
    out = dense_dir / "embeddings.npy"
    if not out.exists():  # else a run killed after assembling it
        paths = [dense_dir.parent / name for name, _ in chunk_units(texts, cfg)]
        dim = int(np.load(paths[0], mmap_mode="r").shape[1])
        with atomic_file(out) as tmp:
            full = np.lib.format.open_memmap(tmp, mode="w+", dtype=cfg.embedding_dtype, shape=(len(texts), dim))
            size = cfg.encode_chunk_size
            for c, path in enumerate(paths):
                full[c * size : (c + 1) * size] = np.load(path)
            full.flush()
            del full
    shutil.rmtree(dense_dir / "chunks", ignore_errors=True)
    encoder = dense_dir / "encoder.json"
    params = {
        "model": cfg.model,
        "backend": cfg.backend,
        "doc_prompt": cfg.doc_prompt,
        "query_prompt": cfg.query_prompt,
        "normalized": True,
        "dtype": cfg.embedding_dtype,
        "dim": int(np.load(out, mmap_mode="r").shape[1]),
        "documents": len(texts),
        "max_seq_length": json.loads(encoder.read_text())["max_seq_length"] if encoder.exists() else cfg.max_seq_length,
        # what the encoder ran in (float16 on CUDA) and its weights: a bi-encoder teacher reuses these embeddings
        # only when they are what it would compute itself (hardneg.teachers.embeddings)
        "encoder_dtype": json.loads(encoder.read_text()).get("dtype") if encoder.exists() else None,
        "weights_sha256": weights_digest(resolve(cfg.model, cfg.allow_download)),
        "text_sha256": text_digest(texts),
    }
    return out, params


def faiss_params(cfg, n: int) -> dict:
    """The resolved faiss parameters recorded in params.json and the index manifest."""
    if cfg.faiss == "ivf":
        nlist = cfg.ivf_nlist or int(4 * math.sqrt(n))
        nlist = max(1, min(nlist, n // 39 or 1))  # faiss wants >= 39 training points per cluster
        return {"type": "ivf", "nlist": nlist, "nprobe": min(cfg.ivf_nprobe, nlist), "metric": "inner_product"}
    if cfg.faiss == "hnsw":
        return {"type": "hnsw", "m": cfg.hnsw_m, "ef_construction": 80, "ef_search": cfg.hnsw_ef_search,
                "metric": "inner_product"}
    return {"type": "flat", "metric": "inner_product"}


def _add(index, emb: np.ndarray) -> None:
    for start in range(0, emb.shape[0], ADD_BATCH):
        index.add(np.ascontiguousarray(emb[start : start + ADD_BATCH], dtype=np.float32))


def build_faiss(emb: np.ndarray, fp: dict):
    import faiss

    dim = emb.shape[1]
    if fp["type"] == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, fp["nlist"], faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(emb.shape[0], size=min(emb.shape[0], 256 * fp["nlist"]), replace=False))
        index.train(np.ascontiguousarray(emb[sample], dtype=np.float32))
    elif fp["type"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, fp["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = fp["ef_construction"]
    else:
        index = faiss.IndexFlatIP(dim)
    _add(index, emb)
    return index


class Dense:
    name = "dense"

    @staticmethod
    def build(texts: list[str], index_dir: Path, cfg) -> dict:
        import faiss

        dense_dir = Path(index_dir) / "dense"
        path, params = encode_corpus(texts, dense_dir, cfg)
        params["faiss"] = fp = faiss_params(cfg, len(texts))
        if fp["type"] != "flat":
            index = build_faiss(np.load(path, mmap_mode="r"), fp)
            with atomic_file(dense_dir / "faiss.index") as tmp:
                faiss.write_index(index, str(tmp))
        atomic_write_bytes(Path(index_dir) / PARAMS, (json.dumps(params, indent=2) + "\n").encode())
        return {"faiss": fp, "embedding_dtype": params["dtype"], "embedding_dim": params["dim"]}

    def __init__(self, index_dir: Path, cfg):
        import faiss

        self.cfg = cfg
        _, self.embeddings, self.params = load_embeddings(index_dir, ids=False)
        fp = self.params["faiss"]
        if fp["type"] == "flat":
            self.index = build_faiss(self.embeddings, fp)
        else:
            self.index = faiss.read_index(str(Path(index_dir) / "dense" / "faiss.index"))
        if fp["type"] == "ivf":
            self.index.nprobe = fp["nprobe"]
        texts, self.query_emb = load_query_embeddings(index_dir)
        self.query_row = {t: i for i, t in enumerate(texts)}
        self.model = None  # loaded only for a query that is not in the index's query cache
        self._last: tuple[list[str], np.ndarray] | None = None

    def _encode_queries(self, queries: list[str]) -> np.ndarray:
        if self._last is None or self._last[0] is not queries:
            rows = [self.query_row.get(q, -1) for q in queries]
            q = np.empty((len(queries), self.query_emb.shape[1]), dtype=np.float32)
            hit = [i for i, r in enumerate(rows) if r >= 0]
            q[hit] = self.query_emb[[rows[i] for i in hit]]
            miss = [i for i, r in enumerate(rows) if r < 0]
            if miss:
                self.model = self.model or load_encoder(self.cfg)
                q[miss] = encode(self.model, [queries[i] for i in miss], self.cfg, self.cfg.query_prompt,
                                 "encoding queries")
            self._last = (queries, q)
        return self._last[1]

    def search(self, queries: list[str], k: int):
        q = self._encode_queries(queries)
        kk = min(k, self.index.ntotal)
        if self.params["faiss"]["type"] == "hnsw":
            self.index.hnsw.efSearch = max(self.params["faiss"]["ef_search"], kk)
        score, idx = self.index.search(q, kk)
        score[idx < 0] = np.nan
        if kk < k:
            idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
            score = np.pad(score, ((0, 0), (0, k - kk)), constant_values=np.nan)
        return idx.astype(np.int64), score.astype(np.float32), None

    def score_docs(self, queries: list[str], rows: list[np.ndarray]) -> list[np.ndarray]:
        """Cosine scores of the given document rows for each query, read from the cached embeddings."""
        q = self._encode_queries(queries)
        out = []
        for i, r in enumerate(rows):
            r = np.asarray(r, dtype=np.int64)
            order = np.argsort(r)
            emb = np.asarray(self.embeddings[r[order]], dtype=np.float32)
            s = np.empty(len(r), dtype=np.float32)
            s[order] = emb @ q[i]
            out.append(s)
        return out
