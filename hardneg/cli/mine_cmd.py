from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done
from hardneg.cli.options import CONFIG, EXECUTION
from hardneg.config import MineConfig


@command("mine", "Retrieve the top-k candidates of every query and mark its labeled positives.")
def mine_cmd(
    index_dir: Path = typer.Argument(..., help="Index directory written by `hardneg index`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory the index was built from."),
    out: Path = typer.Option(..., "--out", help="Mined directory to write."),
    cfg: MineConfig = CONFIG,
    overwrite: bool = OVERWRITE,
    execution=EXECUTION,
):
    from hardneg.config import validate
    from hardneg.stages import mine

    done(mine.run(index_dir, data, out, validate(cfg), overwrite, execution), out)
