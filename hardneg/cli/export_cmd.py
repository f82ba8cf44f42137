from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, choice, command
from hardneg.config import EXPORT_FORMATS


@command("export", "Write the training file: triplets, n-tuples, labeled pairs or FlagEmbedding JSONL.")
def export_cmd(
    relabeled: Path = typer.Argument(..., help="Relabeled directory written by `hardneg relabel`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory (texts are joined back here)."),
    out: Path = typer.Option(..., "--out", help="Training file to write (.parquet or .jsonl)."),
    format: choice("Format", EXPORT_FORMATS) = typer.Option("triplets", "--format", help="Training format."),
    max_positives_per_query: int = typer.Option(0, "--max-positives-per-query", help="0 = all positives."),
    prompt: str = typer.Option("", "--prompt", help="flagembedding: query instruction written to each row."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import ExportConfig, validate
    from hardneg.stages import export

    cfg = ExportConfig(format=format.value, max_positives_per_query=max_positives_per_query, prompt=prompt)
    manifest = export.run(relabeled, data, out, validate(cfg), overwrite)
    s = manifest["summary"]
    left = [f"{s[k]} {label}" for k, label in (
        ("queries_without_negatives", "queries without negatives left out"),
        ("queries_with_fewer_negatives", f"queries with fewer than {s.get('negatives_per_row')} negatives left out"),
    ) if s.get(k)]
    typer.echo(f"wrote {out} ({s['rows']} {format.value} rows{''.join('; ' + x for x in left)})")
