from pathlib import Path

import typer

from hardneg.cli.app import EXECUTOR, RAY_ACTORS, RAY_GPUS, SET, choice, command, execution
from hardneg.config import EXECUTORS

CONFIG_HELP = "Pipeline config: a packaged name (`hardneg config list`: default, bm25-fast, ...) or a TOML file."


@command("run", "Run every stage from one config file into a run directory (skips up-to-date stages).")
def run_cmd(
    src: Path = typer.Argument(..., help="Source dataset folder, or a directory written by `hardneg import`."),
    out: Path = typer.Option(..., "--out", help="Run directory (one subdirectory per stage)."),
    config: str = typer.Option("default", "--config", help=CONFIG_HELP),
    overrides: list[str] = SET,
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild stages whose config or input changed."),
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg import pipeline, summary
    from hardneg.config import resolve_pipeline

    cfg = resolve_pipeline(config, overrides)
    pipeline.run(src, out, cfg, overwrite, log=lambda m: typer.echo(m, err=True),
                 execution=execution(None, executor, ray_actors, ray_gpus_per_actor))
    typer.echo(summary.render(summary.summarize(out)))
    typer.echo(f"{'see it':<24}hardneg report {out}")
