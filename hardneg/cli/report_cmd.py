from pathlib import Path

import typer

from hardneg.cli.app import command


@command("report", "Write one self-contained HTML page of what the filter did to a run (plots, suspects, provenance).")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `hardneg run` (or laid out like one)."),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default: RUN/report.html); plots go beside it."),
    top: int = typer.Option(20, "--top", min=1, help="How many suspected false negatives to list."),
):
    from hardneg import report

    out = out or Path(run_dir) / "report.html"
    plots = report.write(report.collect(run_dir, top=top), out)
    typer.echo(f"wrote {out} (plots in {next(iter(plots.values())).parent})")
