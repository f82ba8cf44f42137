"""The Typer app, the error boundary (HardnegError -> one line on stderr, exit code 2) and shared options."""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Callable
from pathlib import Path

import typer
from typer.models import OptionInfo

from hardneg.errors import AlreadyFinished, HardnegError

app = typer.Typer(
    help="Mine hard negatives for retrieval training, and remove false negatives before they poison it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from hardneg import __version__

        typer.echo(f"hardneg {__version__}")
        raise typer.Exit()


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", envvar="HARDNEG_DEBUG", help="Show tracebacks of errors."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    if debug:
        os.environ["HARDNEG_DEBUG"] = "1"


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) as an exception: stops a stage like Ctrl-C does (see `hardneg.cli.main`)."""

    def __init__(self, signum: int = 2):
        super().__init__(signum)
        self.signum = signum


def command(name: str, help: str, group: typer.Typer | None = None):
    """Register a command (on `app`, or on a sub-command `group`); a HardnegError it raises becomes `error: ...` on
    stderr and exit code 2.

    So does an OSError (a full disk, a file that vanished or cannot be read): one line naming the file; the finished
    parts of the stage stay, and rerunning the same command resumes from them. A parameter defaulting to
    `options.CONFIG` or `options.EXECUTION` becomes the options generated for it (`hardneg.cli.options`).
    """

    def deco(fn):
        from hardneg.cli.options import generate

        call = generate(fn)

        @functools.wraps(call)
        def wrapper(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            except AlreadyFinished as exc:  # a requeued shard of a finished stage
                typer.echo(str(exc), err=True)
                return None
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a scheduler's kill) turned into Interrupted
                signum = getattr(exc, "signum", 2)
                name = "SIGTERM" if signum == 15 else "SIGINT"
                typer.echo(f"interrupted ({name}): the finished parts are kept; rerun the same command to resume",
                           err=True)
                raise typer.Exit(128 + signum) from None
            except (HardnegError, OSError) as exc:
                if os.environ.get("HARDNEG_DEBUG", "") not in ("", "0"):
                    raise
                if isinstance(exc, OSError):
                    where = exc.filename if exc.filename is not None else "I/O"
                    exc = f"{where}: {exc.strerror or exc}; fix that and rerun the same command (it resumes)"
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None

        (group or app).command(name, help=help, short_help=help.split("\n")[0])(wrapper)
        return fn

    return deco


def choice(name: str, values) -> type[enum.Enum]:
    """A str Enum for Typer built from one of the choice tuples in `hardneg.config` (no second list to keep in sync)."""
    return enum.Enum(name, {v: v for v in values}, type=str)


class _LiveHelpOption(OptionInfo):
    help = property(lambda self: self.live_help(), lambda self, value: None)


def live_option(help: Callable[[], str], *args, **kwargs) -> OptionInfo:
    """`typer.Option(*args, **kwargs)` whose help is `help()`, computed each time the app is built (every run, every
    --help): it can list what a registry holds then, a rule registered after import included (hardneg.rules)."""
    option = typer.Option(*args, **kwargs)
    option.__class__ = _LiveHelpOption
    option.live_help = help
    return option


def done(manifest: dict, out: Path) -> None:
    """Print what a stage wrote, and every count of skipped or dropped input rows it recorded (never silently)."""
    rows = sum(manifest.get("parts", {}).values())
    if manifest.get("status") == "shard-done":
        i, n = manifest["shard"]
        parts = f": {len(manifest['parts'])} parts, {rows} rows" if manifest["parts"] else ""
        typer.echo(f"wrote shard {i}/{n} of {out} ({manifest['stage']}{parts}); {manifest['shards_done']} of {n} "
                   f"shards done, the last one to finish writes _SUCCESS")
        return
    skipped = [f"{n} {key.replace('_', ' ')}" for key, n in manifest.get("summary", {}).items()
               if key.endswith(("_skipped", "_dropped")) and n]
    typer.echo(f"wrote {out} ({manifest['stage']}: {rows} rows{''.join('; ' + s for s in skipped)})")


# options shared by the commands (a stage's config options are generated from its dataclass: hardneg.cli.options)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a finished output (or an unfinished one of another config).")
SET = typer.Option(None, "--set", help="Override a config key: section.key=value, the value in TOML (filter.ratio=0.9, "
                   "index.retriever=bm25, 'filter.rules=[\"perc-pos\"]'; key=none unsets an optional key); repeat "
                   "for several.")

# where and which units of a stage run (hardneg.executor)
SHARD = typer.Option(
    None, "--shard", help="Run shard I of N only (I/N, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
    "the shard that finishes last writes _SUCCESS.")
EXECUTOR = typer.Option(
    "local", "--executor", help="local, or ray: Ray Data actor pools (pip install 'hardneg[ray]'; RAY_ADDRESS "
    "names the cluster, else a local instance starts).")
RAY_ACTORS = typer.Option(0, "--ray-actors", help="ray: actors in the pool (0 = one per CPU, or per GPU).")
RAY_GPUS = typer.Option(None, "--ray-gpus-per-actor", help="ray: GPUs per actor (default: 1 if the cluster has GPUs).")


def execution(shard: str | None, executor=None, ray_actors: int = 0, ray_gpus: float | None = None):
    """The `hardneg.executor.Execution` of the --shard / --executor / --ray-* options."""
    from hardneg.executor import Execution, parse_shard

    return Execution(executor=getattr(executor, "value", executor) or "local", shard=parse_shard(shard),
                     ray_actors=ray_actors, ray_gpus_per_actor=ray_gpus)
