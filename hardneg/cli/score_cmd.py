from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, command, done
from hardneg.cli.options import EXECUTION, ConfigOptions
from hardneg.config import ScoreConfig


@command("score", "Score every (query, positive) and (query, candidate) pair with a teacher model.")
def score_cmd(
    mined: Path = typer.Argument(..., help="Mined directory written by `hardneg mine`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory."),
    out: Path = typer.Option(..., "--out", help="Scored directory to write."),
    cfg: ScoreConfig = ConfigOptions(aliases={"model": ["--teacher"]}, notes={"depth": "Needs --filter-config."}),
    filter_config: str = typer.Option(None, "--filter-config", help="Pipeline config (a packaged name or a TOML "
                                      "file) whose [filter] and [relabel] the run will apply: enables adaptive "
                                      "depth (docs/scoring.md)."),
    cache: Path = typer.Option(None, "--cache", help="Score / embedding cache directory (default: "
                               "OUT/.hardneg-cache; RUN/.hardneg-cache under `hardneg run`)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the caches."),
    overwrite: bool = OVERWRITE,
    execution=EXECUTION,
):
    from hardneg.config import resolve_pipeline, validate
    from hardneg.stages import score

    after = resolve_pipeline(filter_config) if filter_config else None
    manifest = score.run(mined, data, out, validate(cfg), overwrite, cache=cache, use_cache=not no_cache,
                         execution=execution, filter_cfg=after.filter if after else None,
                         relabel_cfg=after.relabel if after else None)
    done(manifest, out)
    s = manifest.get("summary", {})
    if "distinct_pairs" in s:
        typer.echo(f"  {s['distinct_pairs']} distinct pairs: {s['scored_pairs']} scored, {s['cached_pairs']} from the "
                   f"cache, {s.get('pairs_skipped_by_depth', 0)} skipped by depth ({s.get('depth')})")
        if "texts_encoded" in s:
            typer.echo(f"  {s['texts_encoded']} texts encoded, {s['embeddings_reused']} embeddings reused"
                       + (" from the index" if s.get("embeddings_from_index") else ""))
