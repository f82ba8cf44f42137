from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, choice, command
from hardneg.config import FLAG_NEGATIVES


@command("import", "Read a dataset (BEIR, JSONL, TSV, CSV, Parquet, HF shards), a pairs / FlagEmbedding file or "
         "explicit --corpus/--queries/--qrels files into validated corpus/queries/qrels Parquet.")
def import_cmd(
    src: str = typer.Argument(None, help="Folder with corpus, queries and qrels files; or a pairs / triplets / "
                              "FlagEmbedding file (.parquet, .jsonl, .json, .csv, .tsv) or `datasets.save_to_disk` "
                              "folder; or a Hub dataset name with --allow-download. Optional with --corpus, "
                              "--queries and --qrels."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write."),
    split: str = typer.Option(None, "--split", help="Which qrels split (BEIR: qrels/<split>.tsv; default test), or "
                              "which split of a saved / Hub DatasetDict (default train)."),
    corpus: Path = typer.Option(None, "--corpus", "--candidate-pool", help="Corpus file. With a folder: replaces "
                                "the one found; with a pairs file: extra documents (a pool of {\"text\"} lines or "
                                "a corpus file) beside the positives."),
    queries: Path = typer.Option(None, "--queries", help="Queries file (replaces the one found in SRC)."),
    qrels: Path = typer.Option(None, "--qrels", help="Qrels file (replaces the one found in SRC)."),
    query_column: str = typer.Option("", "--query-column", help="Pairs: the query column (default: detected)."),
    positive_column: str = typer.Option("", "--positive-column", help="Pairs: the positive column (default: "
                                        "detected)."),
    negative_column: str = typer.Option("", "--negative-column", help="Pairs: the negative column (default: "
                                        "detected)."),
    flag_negatives: choice("FlagNegatives", FLAG_NEGATIVES) = typer.Option(
        "keep", "--flag-negatives", help="Negatives in a pairs / FlagEmbedding file: keep (add them to the corpus, "
        "where mining finds them if they are hard) or ignore."),
    allow_download: bool = typer.Option(False, "--allow-download", help="SRC may be a Hugging Face hub dataset "
                                        "name (downloads it)."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import ImportConfig, validate
    from hardneg.stages import import_

    cfg = ImportConfig(query_column=query_column, positive_column=positive_column, negative_column=negative_column,
                       flag_negatives=flag_negatives.value, allow_download=allow_download)
    if split is not None:
        cfg.split = split
    elif src is not None and import_.shape_of(src, cfg, {"corpus": corpus}) in ("pairs", "hub"):
        cfg.split = "train"
    explicit = {"corpus": corpus, "queries": queries, "qrels": qrels}
    manifest = import_.run(src, out, validate(cfg), overwrite, explicit=explicit)
    s = manifest["summary"]
    dropped = s["queries_without_qrels_dropped"]
    note = f"; {dropped} queries without qrels dropped" if dropped else ""
    if s.get("negatives_in_source_ignored"):
        note += f"; {s['negatives_in_source_ignored']} negatives in the source ignored"
    typer.echo(f"wrote {out} ({s['documents']} documents, {s['queries']} queries, {s['qrels']} qrels{note})")
