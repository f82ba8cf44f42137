import json
from pathlib import Path

import typer

from hardneg.cli.app import command


@command("summary", "Print what a run mined, kept, dropped (by reason) and relabeled.")
def summary_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `hardneg run` (or laid out like one)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    from hardneg import summary

    s = summary.summarize(run_dir)
    typer.echo(json.dumps(s, indent=2) if as_json else summary.render(s))
