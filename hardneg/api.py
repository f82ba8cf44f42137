"""The Python API: `hardneg.mine_hard_negatives`, shaped like `sentence_transformers.util.mine_hard_negatives`.

It runs the same stages as `hardneg run` (import -> index -> mine -> score -> filter -> relabel -> export) in a work
directory and returns the exported rows as a `datasets.Dataset`. With `work_dir` given the run is resumable: calling
again with the same data and options reuses every finished stage, and a changed option rebuilds that stage and the
ones after it. Without `work_dir` a temporary directory is used and removed. See docs/python-api.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from hardneg.config import PipelineConfig, validate
from hardneg.errors import HardnegError

# sentence-transformers' output_format names -> hardneg's export formats (hardneg's own names pass through)
OUTPUT_FORMATS = {"triplet": "triplets", "n-tuple": "n-tuple", "labeled-pair": "labeled",
                  "labeled-list": "labeled-list"}


def _input_table(dataset, split: str):
    """Arrow table of the pairs `dataset`: a datasets.Dataset / DatasetDict, an Arrow table, a polars or pandas
    DataFrame, or a list of dicts."""
    import pyarrow as pa

    if isinstance(dataset, pa.Table):
        return dataset
    if hasattr(dataset, "with_format") and hasattr(dataset, "column_names"):  # datasets.Dataset / DatasetDict
        from hardneg.io.readers import _dataset_table

        return _dataset_table(dataset, split, "dataset")
    if hasattr(dataset, "to_arrow"):  # polars
        return dataset.to_arrow()
    if hasattr(dataset, "to_dict") and hasattr(dataset, "columns"):  # pandas
        return pa.Table.from_pandas(dataset, preserve_index=False)
    if isinstance(dataset, list) and all(isinstance(r, dict) for r in dataset):
        return pa.Table.from_pylist(dataset)
    raise HardnegError(f"dataset: expected a datasets.Dataset, an Arrow table, a DataFrame, a list of dicts or a "
                       f"path; got {type(dataset).__name__}")


def _write_digest_named(table, folder: Path, stem: str) -> Path:
    """Write `table` as Parquet named by its content digest (so a changed input is a changed import config)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hardneg.io.stagedir import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def _model_path(model, folder: Path, name: str) -> str | None:
    """A model name or path as is; a loaded SentenceTransformer / CrossEncoder saved into `folder`, named by a digest
    of its saved files (so other weights are another model to the stages, and the same weights reuse their work)."""
    if model is None or isinstance(model, (str, Path)):
        return str(model) if model is not None else None
    if not hasattr(model, "save"):
        raise HardnegError(f"{name}: expected a model name, a path or a loaded sentence-transformers model")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    model.save(str(tmp))
    h = hashlib.sha256()
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        h.update(f.relative_to(tmp).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    target = folder / f"{name}-{h.hexdigest()[:16]}"
    if target.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return str(target)


def build_config(config=None, *, model=None, teacher=None, cross_encoder=None, num_negatives=None, range_min=None,
                 range_max=None, max_score=None, min_score=None, absolute_margin=None, relative_margin=None,
                 sampling_strategy=None, output_format=None, output_scores=None, query_prompt=None,
                 corpus_prompt=None, batch_size=None, retriever=None, pairing=None, max_rows_per_query=None,
                 with_ids=None, seed=None, device=None, allow_download=None) -> PipelineConfig:
    """Pure: a PipelineConfig from `config` (None = the API's base: dense retrieval with `model`, `model` as
    bi-encoder teacher, hardneg's default filter) with the sentence-transformers-style keywords applied on top."""
    from hardneg.config import load_pipeline

    if config is None:
        cfg = PipelineConfig()
        cfg.index.retriever = "dense"
        cfg.filter.negatives_per_query = 3
    elif isinstance(config, PipelineConfig):
        cfg = dataclasses.replace(config, **{f.name: dataclasses.replace(getattr(config, f.name))
                                             for f in dataclasses.fields(config)
                                             if getattr(config, f.name) is not None})  # [judge] may be unset
    else:
        cfg = load_pipeline(Path(config))
    if model is not None:
        cfg.index.model = model
        if teacher is None and cross_encoder is None and config is None:
            cfg.score.model = model
    if teacher is not None:
        cfg.score.model, cfg.score.teacher_kind = teacher, "bi-encoder"
    if cross_encoder is not None:
        cfg.score.model, cfg.score.teacher_kind = cross_encoder, "cross-encoder"
    # keywords that set one field each, when given
    for value, section, name in (
        (retriever, cfg.index, "retriever"), (num_negatives, cfg.filter, "negatives_per_query"),
        (range_min, cfg.mine, "range_min"), (sampling_strategy, cfg.filter, "sampling"),
        (output_scores, cfg.export, "scores"), (pairing, cfg.export, "pairing"),
        (max_rows_per_query, cfg.export, "max_rows_per_query"), (with_ids, cfg.export, "with_ids"),
    ):
        if value is not None:
            setattr(section, name, value)
    if range_max is not None:
        cfg.mine.top_k, cfg.mine.range_max = range_max, 0
    rules = []
    if max_score is not None:
        rules.append("max-score")
        cfg.filter.max_score = max_score
    if min_score is not None:
        rules.append("min-score")
        cfg.filter.min_score = min_score
    if absolute_margin is not None:
        rules.append("margin-pos")
        cfg.filter.margin = absolute_margin
    if relative_margin is not None:
        rules.append("perc-pos")
        cfg.filter.ratio = 1.0 - relative_margin
    if rules:  # as in sentence-transformers: the rules asked for, no others (exact duplicates are still dropped)
        cfg.filter.rules = ["near-duplicate"] + rules
        cfg.filter.positive_reference = "min"
    if output_format is not None:
        cfg.export.format = OUTPUT_FORMATS.get(output_format, output_format)
    for section in (cfg.index, cfg.score):
        for value, name in ((query_prompt, "query_prompt"), (corpus_prompt, "doc_prompt"), (batch_size, "batch_size"),
                            (device, "device"), (allow_download, "allow_download")):
            if value is not None:
                setattr(section, name, value)
    if seed is not None:
        cfg.filter.seed = cfg.mine.seed = seed
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) is not None:  # an optional section ([judge]) that is not set
            validate(getattr(cfg, f.name), f"mine_hard_negatives [{f.name.rstrip('_')}]")
    return cfg


def mine_hard_negatives(
    dataset,
    *,
    corpus=None,
    model=None,
    teacher=None,
    cross_encoder=None,
    config=None,
    num_negatives: int | None = None,
    work_dir=None,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    range_min: int | None = None,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    sampling_strategy: str | None = None,
    output_format: str | None = None,
    output_scores: bool | None = None,
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
    batch_size: int | None = None,
    retriever: str | None = None,
    pairing: str | None = None,
    max_rows_per_query: int | None = None,
    with_ids: bool | None = None,
    seed: int | None = None,
    device: str | None = None,
    split: str = "train",
    allow_download: bool = False,
    verbose: bool = True,
):
    """Mine hard negatives for a dataset of (anchor, positive) pairs and return the training rows.

    `dataset`: a `datasets.Dataset` of pairs (or triplets, or FlagEmbedding rows), an Arrow table, a DataFrame, a
    list of dicts, or a path (anything `hardneg import` reads: a pairs file, a BEIR folder, ...). `corpus`: extra
    documents beside the positives (a list of texts, a `datasets.Dataset` / table with a `text` column, or a file).
    `model` (name, path or a loaded SentenceTransformer; default all-MiniLM-L6-v2) retrieves; `teacher` (a bi-encoder) or `cross_encoder`
    scores, else `model` does, as in sentence-transformers. `config`: a PipelineConfig or a pipeline TOML path to
    start from; the keywords override it. Keywords with sentence-transformers' names mean what they mean there
    (`relative_margin` -> rule perc-pos with ratio 1 - relative_margin, `absolute_margin` -> margin-pos, `max_score`
    / `min_score`, `range_min` / `range_max`, `num_negatives`, `sampling_strategy`, `output_format` triplet /
    n-tuple / labeled-pair / labeled-list, `output_scores`, `query_prompt` / `corpus_prompt`); hardneg's own:
    `retriever` (bm25, dense, hybrid), `pairing`, `max_rows_per_query`, `with_ids`, `seed`.

    Returns a `datasets.Dataset` with the same columns as `hardneg export` writes.
    """
    import datasets
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hardneg import pipeline
    from hardneg.config import ImportConfig
    from hardneg.io.stagedir import MANIFEST
    from hardneg.stages import import_

    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="hardneg-")) if temporary else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    try:
        inputs = work / "input"
        model_path = _model_path(model, inputs, "model")
        teacher_path = _model_path(teacher, inputs, "teacher")
        ce_path = _model_path(cross_encoder, inputs, "cross-encoder")
        if isinstance(dataset, (str, Path)):
            src = Path(dataset) if Path(dataset).exists() else str(dataset)
        else:
            src = _write_digest_named(_input_table(dataset, split), inputs, "pairs")
        extra = None
        if corpus is not None:
            if isinstance(corpus, (str, Path)):
                extra = Path(corpus)
            else:
                table = pa.table({"text": [str(t) for t in corpus]}) if isinstance(corpus, (list, tuple)) \
                    else _input_table(corpus, split)
                extra = _write_digest_named(table, inputs, "corpus")
        imp = ImportConfig(split=split, query_column=anchor_column_name or "",
                           positive_column=positive_column_name or "", allow_download=allow_download)
        shape = import_.shape_of(src, imp, {"corpus": extra})
        explicit = {"corpus": extra} if shape != "files" else {}
        data_dir = work / pipeline.LAYOUT["import"]
        resolved = import_.resolved_config(src, validate(imp), explicit)
        state = pipeline._state(data_dir, resolved, [], data_dir / MANIFEST)
        if state != "current":
            log(f"[import] -> {data_dir}")
            import_.run(src, data_dir, imp, overwrite=state == "stale" or data_dir.exists(), explicit=explicit)
        else:
            log(f"[import] up to date: {data_dir}")
        cfg = build_config(
            config, model=model_path, teacher=teacher_path, cross_encoder=ce_path, num_negatives=num_negatives,
            range_min=range_min, range_max=range_max, max_score=max_score, min_score=min_score,
            absolute_margin=absolute_margin, relative_margin=relative_margin, sampling_strategy=sampling_strategy,
            output_format=output_format, output_scores=output_scores, query_prompt=query_prompt,
            corpus_prompt=corpus_prompt, batch_size=batch_size, retriever=retriever, pairing=pairing,
            max_rows_per_query=max_rows_per_query, with_ids=with_ids, seed=seed, device=device,
            allow_download=allow_download or None)
        if range_max is None and config is None:
            # sentence-transformers' default depth: range_min + 10 negatives per one asked for + the most positives
            qrels = pq.read_table(data_dir / "qrels.parquet", columns=["query_id"])
            most = int(pl.from_arrow(qrels)["query_id"].value_counts()["count"].max() or 1)
            cfg.mine.top_k = cfg.mine.range_min + 10 * cfg.filter.negatives_per_query + most
        paths = pipeline.run(data_dir, work, cfg, overwrite=True, log=log)
        out = paths["export"]
        table = pq.read_table(out) if out.name.endswith(".parquet") else pl.read_ndjson(out).to_arrow()
        return datasets.Dataset(datasets.table.InMemoryTable(table))
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
