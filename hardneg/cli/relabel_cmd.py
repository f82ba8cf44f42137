from pathlib import Path

import typer

from hardneg.cli.app import EXECUTOR, OVERWRITE, RAY_ACTORS, SHARD, choice, command, done, execution
from hardneg.config import EXECUTORS, POSITIVE_REFERENCES, RELABEL_POLICIES


@command("relabel", "Label every row; promote, drop or flag suspected false negatives, with provenance.")
def relabel_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter` (or judged, by "
                                    "`hardneg judge`)."),
    out: Path = typer.Option(..., "--out", help="Relabeled directory to write."),
    policy: choice("Policy", RELABEL_POLICIES) = typer.Option(
        "drop", "--policy", help="Suspected false negatives: drop (the default: neither negative nor positive), "
        "relabel (promote to positive; measure it first, see README), or keep-flagged (for a judge); on a judged "
        "input (`hardneg judge`) also RLHN's remove (drop the query), hn_remove (drop judged-relevant negatives), rlhn "
        "(promote them; drop a query with more than --max-flagged-per-query)."
    ),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="--no-promote = --policy drop."),
    positive_reference: choice("Reference", POSITIVE_REFERENCES) = typer.Option(
        "max", "--positive-reference", help="A candidate scoring at least this positive score is a suspect."
    ),
    threshold: float = typer.Option(None, "--threshold", help="... or at least this absolute teacher score."),
    max_promoted_per_query: int = typer.Option(3, "--max-promoted-per-query", help="Cap on promotions per query."),
    max_flagged_per_query: int = typer.Option(8, "--max-flagged-per-query",
                                              help="rlhn: drop a query with more candidates judged relevant."),
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,  # no GPU option: relabel runs on CPUs
):
    from hardneg.config import RelabelConfig, validate
    from hardneg.stages import relabel

    cfg = RelabelConfig(promote=promote, positive_reference=positive_reference.value, threshold=threshold,
                        max_promoted_per_query=max_promoted_per_query, policy=policy.value,
                        max_flagged_per_query=max_flagged_per_query)
    done(relabel.run(filtered, out, validate(cfg), overwrite, execution(shard, executor, ray_actors)), out)
