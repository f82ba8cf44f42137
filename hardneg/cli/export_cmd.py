from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, choice, command
from hardneg.config import EXPORT_FORMATS, PAIRINGS


@command("export", "Write the training file: triplets, n-tuples, labeled pairs or lists, margin-MSE or "
         "FlagEmbedding JSONL.")
def export_cmd(
    relabeled: Path = typer.Argument(..., help="Relabeled directory written by `hardneg relabel`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory (texts are joined back here)."),
    out: Path = typer.Option(..., "--out", help="Training file to write (.parquet or .jsonl)."),
    format: choice("Format", EXPORT_FORMATS) = typer.Option("triplets", "--format", help="Training format."),
    pairing: choice("Pairing", PAIRINGS) = typer.Option(
        "labeled", "--pairing", help="triplets / n-tuple / margin-mse: labeled = each negative once, paired with "
        "one of the query's labeled (qrels) positives in turn (n-tuple: one row per query); all = every positive, "
        "promoted ones too, times every negative."),
    max_rows_per_query: int = typer.Option(0, "--max-rows-per-query", help="Cap the rows of each query (0 = none)."),
    max_positives_per_query: int = typer.Option(0, "--max-positives-per-query", help="0 = all positives."),
    scores: bool = typer.Option(False, "--scores", "--output-scores", help="Teacher scores: a scores column "
                                "(triplets, n-tuple), or scores instead of labels (labeled, labeled-list)."),
    with_ids: bool = typer.Option(False, "--with-ids", help="Also write query and document id columns."),
    save_to_disk: bool = typer.Option(False, "--save-to-disk", help="Also write a `datasets.save_to_disk` folder "
                                      "with a dataset card (README.md) beside the file: OUT without its extension "
                                      "+ .dataset."),
    prompt: str = typer.Option("", "--prompt", help="flagembedding: query instruction written to each row."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import ExportConfig, validate
    from hardneg.stages import export

    cfg = ExportConfig(format=format.value, max_positives_per_query=max_positives_per_query, prompt=prompt,
                       pairing=pairing.value, max_rows_per_query=max_rows_per_query, scores=scores,
                       with_ids=with_ids, save_to_disk=save_to_disk)
    manifest = export.run(relabeled, data, out, validate(cfg), overwrite)
    s = manifest["summary"]
    by = s.get("rows_by_positive_source")
    note = f"; by positive: {by['qrels']} qrels, {by['promoted']} promoted" if by else ""
    left = [f"{s[k]} {label}" for k, label in (
        ("queries_without_negatives", "queries without negatives left out"),
        ("queries_with_fewer_negatives", f"queries with fewer than {s.get('negatives_per_row')} negatives left out"),
    ) if s.get(k)]
    extra = f"; and {manifest['dataset_dir']}" if "dataset_dir" in manifest else ""
    typer.echo(f"wrote {out} ({s['rows']} {format.value} rows{note}{''.join('; ' + x for x in left)}){extra}")
