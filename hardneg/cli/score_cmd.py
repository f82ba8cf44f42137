from pathlib import Path

import typer

from hardneg.cli.app import (ALLOW_DOWNLOAD, BACKEND_HELP, BATCH_SIZE, DEVICE, DOC_PROMPT, EXECUTOR, OVERWRITE,
                             QUERY_PROMPT, RAY_ACTORS, RAY_GPUS, SHARD, choice, command, done, execution)
from hardneg.config import BACKENDS, DEFAULT_MODEL, DEPTHS, DTYPES, EXECUTORS, TEACHER_KINDS


@command("score", "Score every (query, positive) and (query, candidate) pair with a teacher model.")
def score_cmd(
    mined: Path = typer.Argument(..., help="Mined directory written by `hardneg mine`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory."),
    out: Path = typer.Option(..., "--out", help="Scored directory to write."),
    teacher: str = typer.Option(DEFAULT_MODEL, "--teacher", help="Teacher model: name or path."),
    teacher_kind: choice("TeacherKind", TEACHER_KINDS) = typer.Option(
        "bi-encoder", "--teacher-kind", help="How the teacher scores a pair."
    ),
    batch_size: int = BATCH_SIZE,
    max_length: int = typer.Option(None, "--max-length", help="Cross-encoder: max tokens of query + document."),
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Bi-encoder: max tokens of a text."),
    device: str = DEVICE,
    dtype: choice("Dtype", DTYPES) = typer.Option(
        "auto", "--dtype", help="Model precision: float16/bfloat16 need CUDA (auto = float32)."
    ),
    backend: choice("ScoreBackend", BACKENDS) = typer.Option(
        "torch", "--backend", help="Bi-encoder teacher: " + BACKEND_HELP),
    query_prompt: str = QUERY_PROMPT,
    doc_prompt: str = DOC_PROMPT,
    depth: choice("Depth", DEPTHS) = typer.Option(
        "auto", "--depth", help="With --filter-config: score ranks window by window and stop a query once the "
        "filter has its negatives (auto: where the training file stays the same); full: every candidate."),
    filter_config: Path = typer.Option(None, "--filter-config", help="Pipeline TOML whose [filter] and [relabel] "
                                       "the run will apply: enables adaptive depth (docs/scoring.md)."),
    first_window: int = typer.Option(50, "--first-window", help="Adaptive depth: ranks scored first (doubles)."),
    cache: Path = typer.Option(None, "--cache", help="Score / embedding cache directory (default: "
                               "OUT/.hardneg-cache; RUN/.hardneg-cache under `hardneg run`)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the caches."),
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import ScoreConfig, load_pipeline, validate
    from hardneg.stages import score

    cfg = ScoreConfig(model=teacher, teacher_kind=teacher_kind.value, max_length=max_length,
                      max_seq_length=max_seq_length, device=device, query_prompt=query_prompt, doc_prompt=doc_prompt,
                      allow_download=allow_download, dtype=dtype.value, backend=backend.value, depth=depth.value,
                      first_window=first_window)
    if batch_size:
        cfg.batch_size = batch_size
    after = load_pipeline(filter_config) if filter_config else None
    manifest = score.run(mined, data, out, validate(cfg), overwrite, cache=cache, use_cache=not no_cache,
                         execution=execution(shard, executor, ray_actors, ray_gpus_per_actor),
                         filter_cfg=after.filter if after else None, relabel_cfg=after.relabel if after else None)
    done(manifest, out)
    s = manifest.get("summary", {})
    if "distinct_pairs" in s:
        typer.echo(f"  {s['distinct_pairs']} distinct pairs: {s['scored_pairs']} scored, {s['cached_pairs']} from the "
                   f"cache, {s.get('pairs_skipped_by_depth', 0)} skipped by depth ({s.get('depth')})")
        if "texts_encoded" in s:
            typer.echo(f"  {s['texts_encoded']} texts encoded, {s['embeddings_reused']} embeddings reused"
                       + (" from the index" if s.get("embeddings_from_index") else ""))
