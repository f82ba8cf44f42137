from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done
from hardneg.cli.options import CONFIG, EXECUTION, ConfigOptions
from hardneg.config import JudgeConfig
from hardneg.judges import JudgeSpec


@command("judge", "Ask LLM judges (a cascade) whether each suspected false negative is relevant to its query.")
def judge_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory."),
    out: Path = typer.Option(..., "--out", help="Judged directory to write (then: hardneg relabel OUT ...)."),
    judge: list[str] = typer.Option(
        None, "--judge", help="A judge of the cascade as key=value pairs, e.g. 'backend=openai,model=Qwen/Qwen2.5-"
        "7B-Instruct,threshold=0.5'; repeat for a cascade (later judges read only what earlier ones flag). "
        "Without it, one judge from the options --backend to --allow-download."),
    spec: JudgeSpec = CONFIG,
    cfg: JudgeConfig = ConfigOptions(exclude=("judges",), aliases={"suspect_reasons": ["--suspect-reason"]}),
    no_margin: bool = typer.Option(False, "--no-margin", help="Only candidates the filter dropped are suspects."),
    cache: Path = typer.Option(None, "--cache", help="Verdict cache directory (default: OUT/.hardneg-cache/judge; "
                               "RUN/.hardneg-cache/judge under `hardneg run`)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the verdict cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the number of calls and tokens; write nothing."),
    overwrite: bool = OVERWRITE,
    execution=EXECUTION,
):
    import dataclasses

    from hardneg.config import validate
    from hardneg.judges import parse_spec
    from hardneg.stages import judge as stage

    cfg.judges = [parse_spec(j) for j in judge] if judge else [dataclasses.asdict(spec)]
    if no_margin:
        cfg.margin = None
    manifest = stage.run(filtered, data, out, validate(cfg, "options"), overwrite, cache=cache,
                         use_cache=not no_cache, dry_run=dry_run, execution=execution,
                         log=lambda m: typer.echo(m, err=True))
    if dry_run:
        return
    done(manifest, out)
    s = manifest.get("summary", {})
    for n, j in enumerate(s.get("judges", []), 1):
        typer.echo(f"  judge {n} {j['judge']}: {j['judged']} judged ({j['calls']} calls), {j['flagged']} flagged "
                   f"at >= {j['threshold']}" + (f", {j['unparsed']} unparsed" if j["unparsed"] else ""))
    if "suspects" in s:
        typer.echo(f"  {s['suspects']} suspects, {s['judged_relevant']} judged relevant")
