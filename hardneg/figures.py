"""The data behind the report's figures and the summary's spreads, from a run's relabeled table (pure): what the
filter and relabel did to each group of rows (labeled positive, promoted, flagged, kept negative, dropped by reason).

`hardneg.summary` (the short account, `hardneg summary` / `hardneg run`) and `hardneg.report` (the HTML page) both
read it; neither imports the other's internals for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from hardneg.config import FilterConfig
from hardneg.rules import RULES
from hardneg.scores import positive_reference

POSITIVE, PROMOTED, FLAGGED, KEPT = "positive (qrels)", "promoted to positive", "flagged for a judge", "kept negative"


def _group() -> pl.Expr:
    """Each row's group in the plots: labeled positive, promoted, flagged, kept negative, or `dropped: <reason>`
    (`dropped: relabel_suspect` for a candidate the filter kept but relabel dropped as a suspect)."""
    return (
        pl.when(pl.col("is_positive")).then(pl.lit(POSITIVE))
        .when(pl.col("label") == "positive").then(pl.lit(PROMOTED))
        .when(pl.col("label") == "flagged").then(pl.lit(FLAGGED))
        .when(pl.col("label") == "negative").then(pl.lit(KEPT))
        .otherwise(pl.lit("dropped: ") + pl.col("reason").fill_null("relabel_suspect"))
    )


def _by_group(df: pl.DataFrame, column: str) -> dict[str, np.ndarray]:
    order = [POSITIVE, PROMOTED, FLAGGED, KEPT] + sorted(g for g in df["group"].unique() if g.startswith("dropped: "))
    return {g: df.filter(pl.col("group") == g)[column].to_numpy() for g in order if g in set(df["group"])}


def rules_of(filter_cfg: dict) -> tuple[list, FilterConfig]:
    """The registered rules a filter config (a manifest's) names, and the config as the FilterConfig they read."""
    known = {f.name for f in dataclasses.fields(FilterConfig)}
    cfg = FilterConfig(**{k: v for k, v in filter_cfg.items() if k in known})
    return [RULES[r] for r in filter_cfg.get("rules", []) if r in RULES], cfg


def figures(relabeled: pl.DataFrame, filter_cfg: dict, top: int = 20) -> dict:
    """Pure: the relabeled table and the filter's config -> the data of every figure and table of the report.

    Values are split by `_group()`. Margins are `s - p` for every negative candidate (non-positive row), `p` its
    query's reference positive score as the filter computed it (`positive_reference`: min/mean/max of the labeled
    positives). Suspects: candidates dropped by a rule (not `not_sampled`) or promoted, by s minus the score of the
    query's best-scored labeled positive (`positive_id`), largest first: the ones the teacher likes most compared
    with what a person labeled relevant.
    """
    # candidates `score` left unscored (adaptive depth) have no score to plot
    df = relabeled.filter(pl.col("teacher_score").is_not_null()).with_columns(_group().alias("group"))
    ref = positive_reference(df, filter_cfg.get("positive_reference", "min"), filter_cfg.get("positive_floor_rank", 0))
    cand = df.filter(~pl.col("is_positive")).join(ref, on="query_id", how="left").filter(pl.col("_pos").is_not_null())
    rules, cfg = rules_of(filter_cfg)
    # a rule's threshold on s - p (`Rule.margin`) is one number (margin-pos) or depends on the query's p (perc-pos):
    # its range over the queries, a candidate right of `hi` is dropped whatever its query, one left of `lo` never
    thresholds = []
    for rule in [r for r in rules if r.margin is not None and cand.height]:
        t = cand.select(rule.margin(cfg).alias("t"))["t"]
        thresholds.append({"rule": rule.name, "lo": float(t.min()), "hi": float(t.max()), "median": float(t.median())})
    kept = df.filter(pl.col("label") == "negative")
    per_query = df.select("query_id").unique().join(kept.group_by("query_id").len(), on="query_id", how="left")
    best = (df.filter(pl.col("is_positive")).sort(["teacher_score", "doc_id"], descending=[True, False])
            .group_by("query_id", maintain_order=True)
            .agg(pl.col("doc_id").first().alias("positive_id"),
                 pl.col("teacher_score").first().alias("positive_score")))
    columns = ("query_id", "doc_id", "rank", "teacher_score", "positive_id", "positive_score", "margin", "reason",
               "label")

    def by_margin(rows: pl.DataFrame) -> pl.DataFrame:
        return (rows.join(best, on="query_id", how="inner")
                .with_columns((pl.col("teacher_score") - pl.col("positive_score")).alias("margin"))
                .sort(["margin", "query_id", "doc_id"], descending=[True, False, False]).select(columns))

    suspects = by_margin(df.filter(~pl.col("is_positive") & (
        ((pl.col("reason") != "not_sampled") & pl.col("reason").is_not_null())
        | pl.col("label").is_in(["positive", "flagged"])))).head(top)
    promoted = by_margin(df.filter(~pl.col("is_positive") & (pl.col("label") == "positive")))
    groups = df.group_by("group").len()
    return {
        "counts": dict(zip(groups["group"].to_list(), groups["len"].to_list())),
        "promoted": promoted.head(top).to_dicts(),
        "promoted_total": promoted.height,
        "promoted_margin": promoted["margin"].to_numpy(),
        "scores": _by_group(df, "teacher_score"),
        "score_lines": {r.name: r.score_threshold(cfg) for r in rules
                        if r.score_threshold is not None and r.score_threshold(cfg) is not None},
        "positive_reference": filter_cfg.get("positive_reference", "min"),
        "margins": _by_group(cand.with_columns((pl.col("teacher_score") - pl.col("_pos")).alias("m")), "m"),
        "margin_thresholds": thresholds,
        "kept_per_query": np.sort(per_query["len"].fill_null(0).to_numpy()),
        "requested_per_query": filter_cfg.get("negatives_per_query", 0),
        "kept_ranks": kept["rank"].drop_nulls().to_numpy(),
        "top_k": int(df["rank"].max() or 0),
        "suspects": suspects.to_dicts(),
    }
