from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done


@command("import", "Read a BEIR, JSONL, TSV or Parquet dataset into validated corpus/queries/qrels Parquet.")
def import_cmd(
    src: Path = typer.Argument(..., help="Folder with corpus, queries and qrels files."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    split: str = typer.Option("test", "--split", help="Which qrels split (BEIR: qrels/<split>.tsv)."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import ImportConfig, validate
    from hardneg.stages import import_

    manifest = import_.run(src, out, validate(ImportConfig(split=split)), overwrite)
    s = manifest["summary"]
    dropped = s["queries_without_qrels_dropped"]
    note = f"; {dropped} queries without qrels dropped" if dropped else ""
    typer.echo(f"wrote {out} ({s['documents']} documents, {s['queries']} queries, {s['qrels']} qrels{note})")
