from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done


@command("mine", "Retrieve the top-k candidates of every query and mark its labeled positives.")
def mine_cmd(
    index_dir: Path = typer.Argument(..., help="Index directory written by `hardneg index`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory the index was built from."),
    out: Path = typer.Option(..., "--out", help="Mined directory to write."),
    top_k: int = typer.Option(50, "--top-k", help="Candidates per query."),
    min_relevance: int = typer.Option(1, "--min-relevance", help="qrels relevance at or above which a doc is positive."),
    query_batch_size: int = typer.Option(256, "--query-batch-size", help="Queries per retrieval batch and per part."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import MineConfig, validate
    from hardneg.stages import mine

    cfg = MineConfig(top_k=top_k, min_relevance=min_relevance, query_batch_size=query_batch_size)
    done(mine.run(index_dir, data, out, validate(cfg), overwrite), out)
