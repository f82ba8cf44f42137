from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, choice, command, done
from hardneg.config import POSITIVE_REFERENCES


@command("relabel", "Label every row; promote confident false negatives to positives, with provenance.")
def relabel_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter`."),
    out: Path = typer.Option(..., "--out", help="Relabeled directory to write."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Promote confident false negatives."),
    positive_reference: choice("Reference", POSITIVE_REFERENCES) = typer.Option(
        "max", "--positive-reference", help="Promote a candidate scoring at least this positive score."
    ),
    threshold: float = typer.Option(None, "--threshold", help="... or at least this absolute teacher score."),
    max_promoted_per_query: int = typer.Option(3, "--max-promoted-per-query", help="Cap on promotions per query."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import RelabelConfig, validate
    from hardneg.stages import relabel

    cfg = RelabelConfig(promote=promote, positive_reference=positive_reference.value, threshold=threshold,
                        max_promoted_per_query=max_promoted_per_query)
    done(relabel.run(filtered, out, validate(cfg), overwrite), out)
