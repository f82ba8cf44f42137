from pathlib import Path

import typer

from hardneg.cli.app import OVERWRITE, choice, command, done
from hardneg.config import FILTER_RULES, POSITIVE_REFERENCES, SAMPLING


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
    positive_reference: choice("Reference", POSITIVE_REFERENCES) = typer.Option(
        "min", "--positive-reference", help="Which positive score of a query the rules compare against."
    ),
    negatives_per_query: int = typer.Option(5, "--negatives-per-query",
                                            help="Keep at most this many survivors per query (0 = all)."),
    sampling: choice("Sampling", SAMPLING) = typer.Option(
        "top", "--sampling", help="Which survivors to keep: top (best rank), random, simans."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of random and simans sampling."),
    simans_a: float = typer.Option(0.5, "--simans-a", help="SimANS: weight exp(-a (s - p - b)^2)."),
    simans_b: float = typer.Option(0.0, "--simans-b", help="SimANS: offset b."),
    overwrite: bool = OVERWRITE,
):
    from hardneg.config import FilterConfig, validate
    from hardneg.stages import filter as filter_stage

    rules = list(dict.fromkeys(r.value for r in rule))
    rules += [r for r, v in (("max-score", max_score), ("min-score", min_score)) if v is not None and r not in rules]
    cfg = FilterConfig(rules=rules, ratio=ratio, margin=margin, max_score=max_score, min_score=min_score,
                       positive_reference=positive_reference.value, negatives_per_query=negatives_per_query,
                       sampling=sampling.value, seed=seed, simans_a=simans_a, simans_b=simans_b)
    done(filter_stage.run(scored, out, validate(cfg), overwrite), out)
