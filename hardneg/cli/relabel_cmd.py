from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done
from hardneg.cli.options import CONFIG, CPU_EXECUTION
from hardneg.config import RelabelConfig


@command("relabel", "Label every row; promote, drop or flag suspected false negatives, with provenance.")
def relabel_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter` (or judged, by "
                                    "`hardneg judge`)."),
    out: Path = typer.Option(..., "--out", help="Relabeled directory to write."),
    cfg: RelabelConfig = CONFIG,
    overwrite: bool = OVERWRITE,
    execution=CPU_EXECUTION,  # no --ray-gpus-per-actor: relabel runs on CPUs
):
    from hardneg.config import validate
    from hardneg.stages import relabel

    done(relabel.run(filtered, out, validate(cfg), overwrite, execution), out)
