import typer

from hardneg.cli.app import SET, app, command
from hardneg.cli.run_cmd import CONFIG_HELP

HELP = "List the packaged pipeline configs, or show one (or a TOML file) resolved in full."
group = typer.Typer(help=HELP, short_help=HELP, no_args_is_help=True)
app.add_typer(group, name="config")


@command("show", "Print a config as TOML with every key, defaults filled in (what `hardneg run --config` uses).",
         group=group)
def show_cmd(
    config: str = typer.Argument("default", help=CONFIG_HELP),
    overrides: list[str] = SET,
):
    from hardneg.config import config_path, resolve_pipeline, to_toml

    cfg = resolve_pipeline(config, overrides)
    sets = "".join(f" --set {s}" for s in overrides or ())
    typer.echo(f"# {config} ({config_path(config)}){sets}: every key; unset ones are comments\n")
    typer.echo(to_toml(cfg), nl=False)


@command("list", "List the packaged configs (names for `hardneg run --config NAME`) with their first comment line.",
         group=group)
def list_cmd():
    from hardneg.config import packaged_configs

    configs = packaged_configs()
    width = max(map(len, configs), default=0) + 2
    for name, path in configs.items():
        first = next((line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        typer.echo(f"{name:<{width}}{first}")
