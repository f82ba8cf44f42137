from pathlib import Path

import typer

from hardneg.cli.app import (ALLOW_DOWNLOAD, BACKEND_HELP, BATCH_SIZE, DEVICE, DOC_PROMPT, EXECUTOR, OVERWRITE,
                             QUERY_PROMPT, RAY_ACTORS, RAY_GPUS, SHARD, choice, command, done, execution)
from hardneg.config import BACKENDS, DEFAULT_MODEL, EMBEDDING_DTYPES, EXECUTORS, FAISS_INDEXES, RETRIEVERS


@command("index", "Build a BM25, dense or hybrid index of the corpus.")
def index_cmd(
    data: Path = typer.Argument(..., help="Dataset directory written by `hardneg import`."),
    out: Path = typer.Option(..., "--out", help="Index directory to write."),
    retriever: choice("Retriever", RETRIEVERS) = typer.Option("bm25", "--retriever", help="Retriever."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Embedding model (dense/hybrid): name or path."),
    batch_size: int = BATCH_SIZE,
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Truncate texts to this many tokens."),
    device: str = DEVICE,
    backend: choice("Backend", BACKENDS) = typer.Option("torch", "--backend", help=BACKEND_HELP),
    query_prompt: str = QUERY_PROMPT,
    doc_prompt: str = DOC_PROMPT,
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
    faiss: choice("Faiss", FAISS_INDEXES) = typer.Option(
        "flat", "--faiss", help="Dense search: flat (exact), ivf or hnsw (approximate, for large corpora)."),
    ivf_nlist: int = typer.Option(0, "--ivf-nlist", help="ivf: clusters (0 = 4 * sqrt(documents))."),
    ivf_nprobe: int = typer.Option(16, "--ivf-nprobe", help="ivf: clusters visited per query."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", help="hnsw: neighbours per node."),
    hnsw_ef_search: int = typer.Option(128, "--hnsw-ef-search", help="hnsw: search breadth (at least the depth)."),
    embedding_dtype: choice("EmbeddingDtype", EMBEDDING_DTYPES) = typer.Option(
        "float32", "--embedding-dtype", help="Dtype of the cached corpus embeddings (float16 halves the disk and RAM)."),
    encode_chunk_size: int = typer.Option(
        8192, "--encode-chunk-size", help="Documents per cached embedding chunk; a killed run resumes from the last."),
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import IndexConfig, validate
    from hardneg.stages import index

    cfg = IndexConfig(retriever=retriever.value, model=model, max_seq_length=max_seq_length, device=device,
                      query_prompt=query_prompt, doc_prompt=doc_prompt, allow_download=allow_download,
                      faiss=faiss.value, ivf_nlist=ivf_nlist, ivf_nprobe=ivf_nprobe, hnsw_m=hnsw_m,
                      hnsw_ef_search=hnsw_ef_search, embedding_dtype=embedding_dtype.value,
                      encode_chunk_size=encode_chunk_size, backend=backend.value)
    if batch_size:
        cfg.batch_size = batch_size
    done(index.run(data, out, validate(cfg), overwrite, execution(shard, executor, ray_actors, ray_gpus_per_actor)), out)
