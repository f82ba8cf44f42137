from pathlib import Path

import typer

from hardneg.cli.app import EXECUTOR, RAY_ACTORS, RAY_GPUS, choice, command, execution
from hardneg.config import EXECUTORS


@command("run", "Run every stage from one config file into a run directory (skips up-to-date stages).")
def run_cmd(
    src: Path = typer.Argument(..., help="Source dataset folder, or a directory written by `hardneg import`."),
    out: Path = typer.Option(..., "--out", help="Run directory (one subdirectory per stage)."),
    config: Path = typer.Option(None, "--config", help="Pipeline TOML (see configs/); default: built-in defaults."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild stages whose config or input changed."),
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg import pipeline, summary
    from hardneg.config import PipelineConfig, load_pipeline

    cfg = load_pipeline(config) if config else PipelineConfig()
    pipeline.run(src, out, cfg, overwrite, log=lambda m: typer.echo(m, err=True),
                 execution=execution(None, executor, ray_actors, ray_gpus_per_actor))
    typer.echo(summary.render(summary.summarize(out)))
    typer.echo(f"{'see it':<24}hardneg report {out}")
