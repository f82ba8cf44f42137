from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command
from hardneg.cli.options import ConfigOptions
from hardneg.config import ImportConfig


@command("import", "Read a dataset (BEIR, JSONL, TSV, CSV, Parquet, HF shards), a pairs / FlagEmbedding file or "
         "explicit --corpus/--queries/--qrels files into validated corpus/queries/qrels Parquet.")
def import_cmd(
    ctx: typer.Context,
    src: str = typer.Argument(None, help="Folder with corpus, queries and qrels files; or a pairs / triplets / "
                              "FlagEmbedding file (.parquet, .jsonl, .json, .csv, .tsv) or `datasets.save_to_disk` "
                              "folder; or a Hub dataset name with --allow-download. Optional with --corpus, "
                              "--queries and --qrels."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    cfg: ImportConfig = ConfigOptions(notes={"split": "Not given: train for a pairs file or a Hub dataset."}),
    corpus: Path = typer.Option(None, "--corpus", "--candidate-pool", help="Corpus file. With a folder: replaces "
                                "the one found; with a pairs file: extra documents (a pool of {\"text\"} lines or "
                                "a corpus file) beside the positives."),
    queries: Path = typer.Option(None, "--queries", help="Queries file (replaces the one found in SRC)."),
    qrels: Path = typer.Option(None, "--qrels", help="Qrels file (replaces the one found in SRC)."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import validate
    from hardneg.stages import import_

    given = getattr(ctx.get_parameter_source("split"), "name", "DEFAULT") != "DEFAULT"  # (typer may vendor click)
    if (not given and src is not None
            and import_.shape_of(src, cfg, {"corpus": corpus}) in ("pairs", "hub")):
        cfg.split = "train"
    explicit = {"corpus": corpus, "queries": queries, "qrels": qrels}
    manifest = import_.run(src, out, validate(cfg), overwrite, explicit=explicit)
    s = manifest["summary"]
    dropped = s["queries_without_qrels_dropped"]
    note = f"; {dropped} queries without qrels dropped" if dropped else ""
    if s.get("negatives_in_source_ignored"):
        note += f"; {s['negatives_in_source_ignored']} negatives in the source ignored"
    typer.echo(f"wrote {out} ({s['documents']} documents, {s['queries']} queries, {s['qrels']} qrels{note})")
