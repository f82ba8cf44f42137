from pathlib import Path

import typer

from hardneg.cli.app import ALLOW_DOWNLOAD, BATCH_SIZE, DEVICE, DOC_PROMPT, OVERWRITE, QUERY_PROMPT, choice, command, done
from hardneg.config import DEFAULT_MODEL, TEACHER_KINDS


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
    device: str = DEVICE,
    query_prompt: str = QUERY_PROMPT,
    doc_prompt: str = DOC_PROMPT,
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import ScoreConfig, validate
    from hardneg.stages import score

    cfg = ScoreConfig(model=teacher, teacher_kind=teacher_kind.value, max_length=max_length, device=device,
                      query_prompt=query_prompt, doc_prompt=doc_prompt, allow_download=allow_download)
    if batch_size:
        cfg.batch_size = batch_size
    done(score.run(mined, data, out, validate(cfg), overwrite), out)
