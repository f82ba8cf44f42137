"""The short account of a run directory: what was mined, kept, dropped (by reason) and relabeled."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from hardneg import schemas
from hardneg.io.stagedir import read_manifest, read_stage
from hardneg.pipeline import LAYOUT


def summarize(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    df = pl.from_arrow(read_stage(run_dir / LAYOUT["relabel"], "relabel", schemas.RELABELED))
    mined = read_manifest(run_dir / LAYOUT["mine"])["summary"]
    negatives = df.filter(~pl.col("is_positive"))
    reasons = negatives.filter(pl.col("reason").is_not_null())["reason"].value_counts(sort=True)
    out = {
        "queries": df["query_id"].n_unique(),
        "queries_without_positive_skipped": mined.get("queries_without_positive_skipped", 0),
        "positives": int(df["is_positive"].sum()),
        "candidates_mined": negatives.height,
        "negatives_kept": int((df["label"] == "negative").sum()),
        "dropped_by_reason": {r: int(c) for r, c in reasons.iter_rows()},
        "relabeled_to_positive": int(((df["label"] == "positive") & (df["label_source"] != "qrels")).sum()),
    }
    for train in sorted(run_dir.glob("train.*.manifest.json")):
        manifest = json.loads(train.read_text())
        out["training_file"] = str(train).removesuffix(".manifest.json")
        out["training_format"] = manifest["config"]["format"]
        out["training_rows"] = manifest["summary"]["rows"]
    return out


def render(summary: dict) -> str:
    lines = [
        f"queries                 {summary['queries']}"
        + (f"  ({summary['queries_without_positive_skipped']} without a positive skipped)"
           if summary["queries_without_positive_skipped"] else ""),
        f"positives (qrels)       {summary['positives']}",
        f"candidates mined        {summary['candidates_mined']}",
        f"negatives kept          {summary['negatives_kept']}",
        f"dropped                 {sum(summary['dropped_by_reason'].values())}",
    ]
    lines += [f"  {reason:<22}{n}" for reason, n in summary["dropped_by_reason"].items()]
    lines.append(f"relabeled to positive   {summary['relabeled_to_positive']}")
    if "training_file" in summary:
        lines.append(
            f"training file           {summary['training_file']} "
            f"({summary['training_rows']} {summary['training_format']} rows)"
        )
    return "\n".join(lines)
