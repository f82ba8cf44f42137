from pathlib import Path

import typer

from hardneg.cli.app import (EXECUTOR, OVERWRITE, RAY_ACTORS, RAY_GPUS, SEED, SHARD, SIMANS_A, SIMANS_B, choice,
                             command, done, execution)
from hardneg.config import DEFAULT_MODEL, EXECUTORS, FILTER_RULES, POSITIVE_REFERENCES, SAMPLING, SHORT_POLICIES


@command("filter", "Drop likely false negatives with positive-aware teacher-score rules, recording why.")
def filter_cmd(
    scored: Path = typer.Argument(..., help="Scored directory written by `hardneg score`."),
    out: Path = typer.Option(..., "--out", help="Filtered directory to write."),
    rule: list[choice("Rule", FILTER_RULES)] = typer.Option(
        ["perc-pos"], "--rule", help="Rule to apply (repeat for several)."
    ),
    ratio: float = typer.Option(0.95, "--ratio", help="perc-pos: drop if score > ratio x positive score."),
    margin: float = typer.Option(0.05, "--margin", help="margin-pos: drop if score > positive score - margin."),
    max_score: float = typer.Option(None, "--max-score", help="Drop if score > this (adds the max-score rule)."),
    min_score: float = typer.Option(None, "--min-score", help="Drop if score < this (adds the min-score rule)."),
    rank_min: int = typer.Option(None, "--rank-min", help="Drop candidates ranked above this (adds rank-window)."),
    rank_max: int = typer.Option(None, "--rank-max", help="Drop candidates ranked below this (adds rank-window)."),
    dup_threshold: float = typer.Option(
        None, "--dup-threshold", help="Drop candidates whose cosine with a positive is >= this (adds near-duplicate)."
    ),
    dup_model: str = typer.Option(DEFAULT_MODEL, "--dup-model",
                                  help="near-duplicate: model embedding documents when no dense index is at hand."),
    index: Path = typer.Option(None, "--index", help="near-duplicate: index dir whose dense embeddings to use "
                               "(default: the one `mine` used, if dense)."),
    data: Path = typer.Option(None, "--data", help="near-duplicate: dataset dir (default: the one `score` used)."),
    positive_reference: choice("Reference", POSITIVE_REFERENCES) = typer.Option(
        "min", "--positive-reference", help="Which positive score of a query the rules compare against."
    ),
    positive_floor_rank: int = typer.Option(
        0, "--positive-floor-rank", help="When a query's positive scores below all of the retriever's top N "
        "candidates, compare against the weakest of them instead (0 = off)."),
    negatives_per_query: int = typer.Option(5, "--negatives-per-query",
                                            help="Keep at most this many survivors per query (0 = all)."),
    sampling: choice("Sampling", SAMPLING) = typer.Option(
        "top", "--sampling", help="Which survivors to keep: top (best rank), random, simans."
    ),
    short_policy: choice("ShortPolicy", SHORT_POLICIES) = typer.Option(
        "keep", "--short-policy", help="Queries with fewer negatives: keep short, drop, or pad from below --rank-max."
    ),
    seed: int = SEED,
    simans_a: float = SIMANS_A,
    simans_b: float = SIMANS_B,
    dropped_out: Path = typer.Option(None, "--dropped-out", help="Also write the dropped rows (with reasons) here."),
    overwrite: bool = OVERWRITE,
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import FilterConfig, validate
    from hardneg.stages import filter as filter_stage

    rules = list(dict.fromkeys(r.value for r in rule))
    implied = (("max-score", max_score), ("min-score", min_score), ("rank-window", rank_min),
               ("rank-window", rank_max), ("near-duplicate", dup_threshold))
    rules += list(dict.fromkeys(r for r, v in implied if v is not None and r not in rules))
    cfg = FilterConfig(rules=rules, ratio=ratio, margin=margin, max_score=max_score, min_score=min_score,
                       positive_reference=positive_reference.value, positive_floor_rank=positive_floor_rank,
                       negatives_per_query=negatives_per_query,
                       sampling=sampling.value, seed=seed, simans_a=simans_a, simans_b=simans_b, rank_min=rank_min,
                       rank_max=rank_max, dup_threshold=dup_threshold, dup_model=dup_model,
                       short_policy=short_policy.value)
    manifest = filter_stage.run(scored, out, validate(cfg), overwrite, data_dir=data, index_dir=index,
                                dropped_out=dropped_out,
                                execution=execution(shard, executor, ray_actors, ray_gpus_per_actor))
    done(manifest, out)
    s = manifest.get("summary", {})
    if s.get("queries_short"):
        typer.echo(f"  {s['queries_short']} of {s['queries']} queries have fewer than {negatives_per_query} "
                   f"negatives (short policy: {short_policy.value})")
