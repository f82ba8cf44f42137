from pathlib import Path

import typer

from hardneg.cli.app import (ALLOW_DOWNLOAD, BACKEND_HELP, BATCH_SIZE, DEVICE, DOC_PROMPT, EXECUTOR, OVERWRITE,
                             QUERY_PROMPT, RAY_ACTORS, RAY_GPUS, SHARD, choice, command, done, execution)
from hardneg.config import BACKENDS, DEFAULT_MODEL, DTYPES, EXECUTORS, TEACHER_KINDS


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
    cache: Path = typer.Option(None, "--cache", help="Score cache directory (default: OUT/../.hardneg-cache/scores)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the score cache."),
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import ScoreConfig, validate
    from hardneg.stages import score

    cfg = ScoreConfig(model=teacher, teacher_kind=teacher_kind.value, max_length=max_length,
                      max_seq_length=max_seq_length, device=device, query_prompt=query_prompt, doc_prompt=doc_prompt,
                      allow_download=allow_download, dtype=dtype.value, backend=backend.value)
    if batch_size:
        cfg.batch_size = batch_size
    manifest = score.run(mined, data, out, validate(cfg), overwrite, cache=cache, use_cache=not no_cache,
                         execution=execution(shard, executor, ray_actors, ray_gpus_per_actor))
    done(manifest, out)
    s = manifest.get("summary", {})
    if "distinct_pairs" in s:
        typer.echo(f"  {s['distinct_pairs']} distinct pairs: {s['scored_pairs']} scored, {s['cached_pairs']} from the cache")
