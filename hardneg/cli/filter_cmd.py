from pathlib import Path

import typer

from hardneg import rules as filter_rules
from hardneg.cli.app import OVERWRITE, command, done, live_option
from hardneg.cli.options import EXECUTION, ConfigOptions
from hardneg.config import FilterConfig

# options that add the rule they configure when it is not among --rule's
IMPLIED = {"max_score": "max-score", "min_score": "min-score", "rank_min": "rank-window", "rank_max": "rank-window",
           "dup_threshold": "near-duplicate"}


@command("filter", "Drop likely false negatives with positive-aware teacher-score rules, recording why.")
def filter_cmd(
    scored: Path = typer.Argument(..., help="Scored directory written by `hardneg score`."),
    out: Path = typer.Option(..., "--out", help="Filtered directory to write."),
    dropped_out: Path = typer.Option(None, "--dropped-out", help="Also write the dropped rows (with reasons) here."),
    # --rule's help lists the rules registered when the app is built (hardneg.rules), so it is not generated
    rules: list[str] = live_option(filter_rules.help_text, FilterConfig().rules, "--rule", "--rules",
                                  parser=filter_rules.parse, metavar="RULE"),
    cfg: FilterConfig = ConfigOptions(exclude=("rules",), notes={
        key: f"Adds the {rule} rule." for key, rule in IMPLIED.items()}),
    index: Path = typer.Option(None, "--index", help="near-duplicate: index dir whose dense embeddings to use "
                               "(default: the one `mine` used, if dense)."),
    data: Path = typer.Option(None, "--data", help="near-duplicate: dataset dir (default: the one `score` used)."),
    overwrite: bool = OVERWRITE,
    execution=EXECUTION,
):
    from hardneg.config import validate
    from hardneg.stages import filter as filter_stage

    cfg.rules = list(dict.fromkeys(rules))
    cfg.rules += list(dict.fromkeys(rule for key, rule in IMPLIED.items()
                                    if getattr(cfg, key) is not None and rule not in cfg.rules))
    manifest = filter_stage.run(scored, out, validate(cfg), overwrite, data_dir=data, index_dir=index,
                                dropped_out=dropped_out, execution=execution)
    done(manifest, out)
    s = manifest.get("summary", {})
    if s.get("queries_short"):
        typer.echo(f"  {s['queries_short']} of {s['queries']} queries have fewer than {cfg.negatives_per_query} "
                   f"negatives (short policy: {cfg.short_policy})")
