from pathlib import Path

import typer

from hardneg.cli.app import ALLOW_DOWNLOAD, BATCH_SIZE, DEVICE, DOC_PROMPT, OVERWRITE, QUERY_PROMPT, choice, command, done
from hardneg.config import DEFAULT_MODEL, RETRIEVERS


@command("index", "Build a BM25, dense or hybrid index of the corpus.")
def index_cmd(
    data: Path = typer.Argument(..., help="Dataset directory written by `hardneg import`."),
    out: Path = typer.Option(..., "--out", help="Index directory to write."),
    retriever: choice("Retriever", RETRIEVERS) = typer.Option("bm25", "--retriever", help="Retriever."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Embedding model (dense/hybrid): name or path."),
    batch_size: int = BATCH_SIZE,
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Truncate texts to this many tokens."),
    device: str = DEVICE,
    query_prompt: str = QUERY_PROMPT,
    doc_prompt: str = DOC_PROMPT,
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import IndexConfig, validate
    from hardneg.stages import index

    cfg = IndexConfig(retriever=retriever.value, model=model, max_seq_length=max_seq_length, device=device,
                      query_prompt=query_prompt, doc_prompt=doc_prompt, allow_download=allow_download)
    if batch_size:
        cfg.batch_size = batch_size
    done(index.run(data, out, validate(cfg), overwrite), out)
