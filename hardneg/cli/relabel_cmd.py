from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, SHARD, command, done, execution
from hardneg.cli.options import CONFIG
from hardneg.config import RelabelConfig


@command("relabel", "Label every row; promote, drop or flag suspected false negatives, with provenance.")
def relabel_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter` (or judged, by "
                                    "`hardneg judge`)."),
    out: Path = typer.Option(..., "--out", help="Relabeled directory to write."),
    cfg: RelabelConfig = CONFIG,
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
):
    from hardneg.config import validate
    from hardneg.stages import relabel

    done(relabel.run(filtered, out, validate(cfg), overwrite, execution(shard)), out)
