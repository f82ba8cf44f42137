from pathlib import Path

import typer

from hardneg.cli.app import (EXECUTOR, OVERWRITE, RAY_ACTORS, RAY_GPUS, SEED, SHARD, SIMANS_A, SIMANS_B, choice, command,
                             done, execution)
from hardneg.config import EXECUTORS, FUSIONS, SAMPLING


@command("mine", "Retrieve the top-k candidates of every query and mark its labeled positives.")
def mine_cmd(
    index_dir: Path = typer.Argument(..., help="Index directory written by `hardneg index`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory the index was built from."),
    out: Path = typer.Option(..., "--out", help="Mined directory to write."),
    top_k: int = typer.Option(50, "--top-k", help="Candidates per query."),
    min_relevance: int = typer.Option(1, "--min-relevance", help="qrels relevance at or above which a doc is positive."),
    query_batch_size: int = typer.Option(256, "--query-batch-size", help="Queries per retrieval batch and per part."),
    overwrite: bool = OVERWRITE,
    range_min: int = typer.Option(0, "--range-min", help="Skip the N best-ranked candidates (positives are kept)."),
    range_max: int = typer.Option(0, "--range-max", help="Last rank kept, and the retrieval depth (0 = --top-k)."),
    sample: int = typer.Option(0, "--sample", help="Keep N candidates per query from the rank window (0 = all)."),
    sampling: choice("MineSampling", SAMPLING) = typer.Option(
        "top", "--sampling", help="With --sample: top ranks, random, or simans (near the best positive's score)."),
    seed: int = SEED,
    simans_a: float = SIMANS_A,
    simans_b: float = SIMANS_B,
    fusion: choice("Fusion", FUSIONS) = typer.Option(
        "rrf", "--fusion", help="Hybrid: reciprocal-rank fusion or weighted min-max normalized scores."),
    dense_weight: float = typer.Option(0.5, "--dense-weight", help="Hybrid weighted fusion: weight of dense (0..1)."),
    rrf_k: int = typer.Option(60, "--rrf-k", help="Hybrid rrf: the constant k in 1 / (k + rank)."),
    sparse_depth: int = typer.Option(0, "--sparse-depth", help="Hybrid: bm25 candidates before fusion (0 = depth)."),
    dense_depth: int = typer.Option(0, "--dense-depth", help="Hybrid: dense candidates before fusion (0 = depth)."),
    device: str = typer.Option(None, "--device",
                               help="Device for a query missing from the index's query cache (default: the index's)."),
    shard: str = SHARD,
    executor: choice("Executor", EXECUTORS) = EXECUTOR,
    ray_actors: int = RAY_ACTORS,
    ray_gpus_per_actor: float = RAY_GPUS,
):
    from hardneg.config import MineConfig, validate
    from hardneg.stages import mine

    cfg = MineConfig(top_k=top_k, min_relevance=min_relevance, query_batch_size=query_batch_size, rrf_k=rrf_k,
                     range_min=range_min, range_max=range_max, sample=sample, sampling=sampling.value, seed=seed,
                     simans_a=simans_a, simans_b=simans_b, fusion=fusion.value, dense_weight=dense_weight,
                     sparse_depth=sparse_depth, dense_depth=dense_depth, device=device)
    done(mine.run(index_dir, data, out, validate(cfg), overwrite, execution(shard, executor, ray_actors, ray_gpus_per_actor)),
         out)
