"""Stage options generated from the config dataclasses, so that each default and help text is stated once (in
`hardneg.config`, with `opt`).

A command declares where its config's options go with one parameter annotated with the dataclass and defaulting to
`CONFIG` (or to `ConfigOptions(...)` for aliases, left-out fields and command-line notes):

    def mine_cmd(..., cfg: MineConfig = CONFIG, overwrite: bool = OVERWRITE, execution=EXECUTION): ...

`generate` (which `hardneg.cli.app.command` applies) replaces that parameter, in the signature Typer reads, by one
option per field: `--field-name` (plus aliases), the field's default and help text (plus a note), its choices from
the field (`opt(choices=...)`) or `config.CHOICES`; a bool field is a flag (`--x`, or `--x/--no-x` when it defaults
to True), a list field a repeatable option. The command is called with the dataclass built from the parsed values,
not validated yet: it may complete it (filter adds the rules its options imply) before `config.validate`. A
parameter defaulting to `EXECUTION` becomes --shard, --executor, --ray-actors and --ray-gpus-per-actor
(`CPU_EXECUTION`: the same without --ray-gpus-per-actor), and the command gets their `hardneg.executor.Execution`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import types
import typing

import typer

from hardneg.cli.app import EXECUTOR, RAY_ACTORS, RAY_GPUS, SHARD, choice, execution
from hardneg.config import CHOICES, EXECUTORS


@dataclasses.dataclass(frozen=True)
class ConfigOptions:
    """The default of a command's config parameter: its options are generated from the dataclass it is annotated
    with. `aliases`: field -> more option names (earlier spellings, e.g. {"model": ("--teacher",)}); `exclude`:
    fields left off the command line; `notes`: field -> text appended to its help on the command line."""

    aliases: dict = dataclasses.field(default_factory=dict)
    exclude: tuple = ()
    notes: dict = dataclasses.field(default_factory=dict)


CONFIG = ConfigOptions()
EXECUTION: typing.Any = type("ExecutionOptions", (), {"__repr__": lambda self: "EXECUTION"})()
# the same without --ray-gpus-per-actor, for stages that only use CPUs (relabel)
CPU_EXECUTION: typing.Any = type("CpuExecutionOptions", (), {"__repr__": lambda self: "CPU_EXECUTION"})()


def field_help(cls, name: str) -> str:
    """The help text of a config field (a subclass that redeclares a field without one inherits its base's)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return f.metadata["help"]
    return ""


def field_choices(f: dataclasses.Field) -> tuple | None:
    return f.metadata.get("choices") or CHOICES.get(f.name)


def _value_kind(hint) -> type:
    """str | int | float | bool | list: what an option of a field of type `hint` parses (None is only a default)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return list if hint is list or typing.get_origin(hint) is list else hint


def _param(name: str, option, annotation) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=annotation)


def parameters(cls, how: ConfigOptions = CONFIG) -> list[inspect.Parameter]:
    """One Typer option per field of the dataclass `cls` (but `how.exclude`), as `inspect.Parameter`s."""
    defaults = cls()
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in how.exclude:
            continue
        kind = _value_kind(hints[f.name])
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool and default else [flag]
        help = " ".join(x for x in (field_help(cls, f.name), how.notes.get(f.name)) if x)
        annotation = list[str] if kind is list else kind
        if field_choices(f):  # a str Enum: Typer makes it a click Choice; `build` takes the values back
            annotation = choice(f"{cls.__name__}_{f.name}", field_choices(f))
        option = typer.Option(list(default) if kind is list else default, *decls, *how.aliases.get(f.name, ()),
                              help=help)
        out.append(_param(f.name, option, annotation))
    return out


def build(cls, values: dict):
    """The dataclass `cls` from parsed option values (choices as their str values, lists as lists)."""
    def plain(v):
        return v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v

    return cls(**{k: plain(v) for k, v in values.items()})


def _execution_parameters(gpus: bool = True) -> list[inspect.Parameter]:
    params = [_param("shard", SHARD, str), _param("executor", EXECUTOR, choice("Executor", EXECUTORS)),
              _param("ray_actors", RAY_ACTORS, int)]
    return params + [_param("ray_gpus_per_actor", RAY_GPUS, float)] if gpus else params


def _make_execution(values: dict):
    return execution(values.get("shard"), values.get("executor"), values.get("ray_actors", 0),
                     values.get("ray_gpus_per_actor"))


def generate(fn):
    """`fn` with every parameter defaulting to a `ConfigOptions` or to `EXECUTION` replaced by its generated
    options, in the signature Typer reads; `fn` is called with the built dataclass / Execution in their place."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    spliced = {}  # parameter name -> (its generated parameters, how to build its value from theirs)
    for p in sig.parameters.values():
        if isinstance(p.default, ConfigOptions):
            cls = hints.get(p.name)
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{fn.__name__}: {p.name} = {p.default} needs a config dataclass annotation")
            spliced[p.name] = (parameters(cls, p.default), functools.partial(build, cls))
        elif p.default is EXECUTION or p.default is CPU_EXECUTION:
            spliced[p.name] = (_execution_parameters(gpus=p.default is EXECUTION), _make_execution)
    if not spliced:
        return fn
    params = [q for p in sig.parameters.values() for q in (spliced[p.name][0] if p.name in spliced else [p])]
    names = [q.name for q in params]
    if len(set(names)) != len(names):
        raise TypeError(f"{fn.__name__}: generated options clash: {sorted(n for n in names if names.count(n) > 1)}")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for name, (generated, make) in spliced.items():
            kwargs[name] = make({q.name: kwargs.pop(q.name) for q in generated if q.name in kwargs})
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # what Typer reads (inspect.signature prefers it)
    return wrapper
