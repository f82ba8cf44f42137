from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command
from hardneg.cli.options import ConfigOptions
from hardneg.config import ExportConfig


@command("export", "Write the training file: triplets, n-tuples, labeled pairs or lists, margin-MSE or "
         "FlagEmbedding JSONL.")
def export_cmd(
    relabeled: Path = typer.Argument(..., help="Relabeled directory written by `hardneg relabel`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory (texts are joined back here)."),
    out: Path = typer.Option(..., "--out", help="Training file to write (.parquet or .jsonl)."),
    cfg: ExportConfig = ConfigOptions(aliases={"scores": ["--output-scores"]}),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import validate
    from hardneg.stages import export

    manifest = export.run(relabeled, data, out, validate(cfg), overwrite)
    s = manifest["summary"]
    by = s.get("rows_by_positive_source")
    note = f"; by positive: {by['qrels']} qrels, {by['promoted']} promoted" if by else ""
    left = [f"{s[k]} {label}" for k, label in (
        ("queries_without_negatives", "queries without negatives left out"),
        ("queries_with_fewer_negatives", f"queries with fewer than {s.get('negatives_per_row')} negatives left out"),
    ) if s.get(k)]
    extra = f"; and {manifest['dataset_dir']}" if "dataset_dir" in manifest else ""
    typer.echo(f"wrote {out} ({s['rows']} {cfg.format} rows{note}{''.join('; ' + x for x in left)}){extra}")
