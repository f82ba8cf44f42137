from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done
from hardneg.cli.options import CONFIG, EXECUTION
from hardneg.config import IndexConfig


@command("index", "Build a BM25, dense or hybrid index of the corpus.")
def index_cmd(
    data: Path = typer.Argument(..., help="Dataset directory written by `hardneg import`."),
    out: Path = typer.Option(..., "--out", help="Index directory to write."),
    cfg: IndexConfig = CONFIG,
    overwrite: bool = OVERWRITE,
    execution=EXECUTION,
):
    from hardneg.config import validate
    from hardneg.stages import index

    done(index.run(data, out, validate(cfg), overwrite, execution), out)
