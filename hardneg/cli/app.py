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


def command(name: str, help: str):
    """Register a command; a HardnegError it raises becomes `error: ...` on stderr and exit code 2.

    So does an OSError (a full disk, a file that vanished or cannot be read): one line naming the file; the finished
    parts of the stage stay, and rerunning the same command resumes from them.
    """

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
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

        app.command(name, help=help, short_help=help.split("\n")[0])(wrapper)
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


# options shared by the commands that run a sentence-transformers model
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a finished output (or an unfinished one of another config).")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Encoding/scoring batch size.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
QUERY_PROMPT = typer.Option("", "--query-prompt", help="Prefix for queries, e.g. 'query: '.")
DOC_PROMPT = typer.Option("", "--doc-prompt", help="Prefix for documents, e.g. 'passage: '.")
ALLOW_DOWNLOAD = typer.Option(
    False, "--allow-download", help="Let a model missing locally download from the Hugging Face hub."
)
BACKEND_HELP = ("Encoder runtime: torch, or onnxruntime on CPU: onnx (float32, same embeddings to ~1e-6) or "
                "onnx-int8 (int8 matrix products: faster, approximate); onnx* need `pip install 'hardneg[onnx]'` "
                "and export the model once into the model cache.")
# sampling options shared by `mine` (inside the rank window) and `filter` (among the survivors)
SEED = typer.Option(0, "--seed", help="Seed of random and simans sampling.")
SIMANS_A = typer.Option(0.5, "--simans-a", help="SimANS weight exp(-a * (s - p - b)^2): a.")
SIMANS_B = typer.Option(0.0, "--simans-b", help="SimANS weight exp(-a * (s - p - b)^2): b.")

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
