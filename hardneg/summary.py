"""The short account of a run directory: what was mined, kept, dropped (by reason) and relabeled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from hardneg import schemas
from hardneg.io.stagedir import MANIFEST, input_dir, read_manifest, read_stage, require_finished
from hardneg.pipeline import LAYOUT
from hardneg.figures import figures


def summarize(run_dir: Path, relabeled: pl.DataFrame | None = None) -> dict:
    """`relabeled`: the run's relabeled table when the caller has already read it."""
    run_dir = Path(run_dir)
    df = relabeled if relabeled is not None else pl.from_arrow(
        read_stage(run_dir / LAYOUT["relabel"], "relabel", schemas.RELABELED))
    mine_manifest = read_manifest(run_dir / LAYOUT["mine"])
    mined = mine_manifest["summary"]
    data_dir = input_dir(run_dir / LAYOUT["mine"], "import", mine_manifest)
    imported = read_manifest(data_dir).get("summary", {}) if data_dir and (data_dir / MANIFEST).exists() else {}
    negatives = df.filter(~pl.col("is_positive"))
    # counted as the report's panels are: a promoted or flagged candidate is that, not a drop under its reason
    dropped = negatives.filter(pl.col("label") == "dropped")
    reasons = dropped["reason"].fill_null("relabel_suspect").value_counts(sort=True)
    out = {
        "queries": df["query_id"].n_unique(),
        "queries_without_positive_skipped": mined.get("queries_without_positive_skipped", 0),
        "queries_without_qrels_dropped": imported.get("queries_without_qrels_dropped", 0),
        "positives": int(df["is_positive"].sum()),
        "candidates_mined": negatives.height,
        "negatives_kept": int((df["label"] == "negative").sum()),
        "dropped_by_reason": {r: int(c) for r, c in reasons.iter_rows()},
        "relabeled_to_positive": int(((df["label"] == "positive") & (df["label_source"] != "qrels")).sum()),
        "flagged": int((df["label"] == "flagged").sum()),
    }
    score_manifest = run_dir / LAYOUT["score"] / MANIFEST
    if score_manifest.exists():  # what the teacher cost (hardneg.stages.score)
        scored = json.loads(score_manifest.read_text()).get("summary", {})
        out["teacher"] = {k: scored[k] for k in ("distinct_pairs", "scored_pairs", "cached_pairs",
                                                 "pairs_skipped_by_depth", "texts_encoded", "embeddings_reused",
                                                 "embeddings_from_index", "depth") if k in scored}
    filter_cfg = require_finished(run_dir / LAYOUT["filter"], "filter")["config"]
    fig = figures(df, filter_cfg, top=3)
    counts, requested = fig["kept_per_query"], fig["requested_per_query"]
    out["figures"] = {
        "teacher_score": {g: _spread(v) for g, v in fig["scores"].items()},
        "margin_to_positive": {g: _spread(v) for g, v in fig["margins"].items()},
        "positive_reference": fig["positive_reference"],
        "margin_thresholds": fig["margin_thresholds"],
        "kept_per_query": {"requested": requested, "mean": round(float(counts.mean()), 2) if len(counts) else 0.0,
                           "queries_with_none": int((counts == 0).sum()),
                           "queries_with_all": int((counts >= requested).sum()) if requested else None},
        "kept_rank": _spread(fig["kept_ranks"]),
        "top_suspects": [{k: x[k] for k in ("query_id", "doc_id", "teacher_score", "positive_score", "reason",
                                             "label")} for x in fig["suspects"]],
    }
    for train in sorted(run_dir.glob("train.*.manifest.json")):
        manifest = json.loads(train.read_text())
        out["training_file"] = str(train).removesuffix(".manifest.json")
        out["training_format"] = manifest["config"]["format"]
        out["training_rows"] = manifest["summary"]["rows"]
        for key in ("rows_by_positive_source", "positives_by_source"):
            if key in manifest["summary"]:
                out[f"training_{key}"] = manifest["summary"][key]
    return out


def _spread(values) -> dict:
    """rows, median, 10th and 90th percentile."""
    if not len(values):
        return {"rows": 0}
    p10, med, p90 = np.percentile(values, [10, 50, 90])
    return {"rows": len(values), "median": round(float(med), 4), "p10": round(float(p10), 4),
            "p90": round(float(p90), 4)}


def _spread_text(d: dict, fmt: str = "{:+.3f}") -> str:
    if not d["rows"]:
        return "-"
    return f"{fmt.format(d['median']):>7}  [{fmt.format(d['p10'])} .. {fmt.format(d['p90'])}]"


def render(summary: dict) -> str:
    skipped = [f"{summary[key]} {what}" for key, what in (
        ("queries_without_positive_skipped", "without a positive skipped"),
        ("queries_without_qrels_dropped", "without qrels dropped"),
    ) if summary.get(key)]
    lines = [
        f"queries                 {summary['queries']}" + (f"  ({', '.join(skipped)})" if skipped else ""),
        f"positives (qrels)       {summary['positives']}",
        f"candidates mined        {summary['candidates_mined']}",
        f"negatives kept          {summary['negatives_kept']}",
        f"dropped                 {sum(summary['dropped_by_reason'].values())}",
    ]
    lines += [f"  {reason:<22}{n}" if len(reason) < 22 else f"  {reason} {n}"
              for reason, n in summary["dropped_by_reason"].items()]
    lines.append(f"relabeled to positive   {summary['relabeled_to_positive']}")
    if summary.get("flagged"):
        lines.append(f"flagged for a judge     {summary['flagged']}")
    t = summary.get("teacher")
    if t and "scored_pairs" in t:
        line = (f"teacher pairs           {t['scored_pairs']} scored, {t.get('cached_pairs', 0)} from the cache, "
                f"{t.get('pairs_skipped_by_depth', 0)} skipped by depth")
        if "texts_encoded" in t:
            line += (f"; {t['texts_encoded']} texts encoded, {t['embeddings_reused']} embeddings reused"
                     + (" (from the index)" if t.get("embeddings_from_index") else ""))
        lines.append(line)
    if "training_file" in summary:
        lines.append(
            f"training file           {summary['training_file']} "
            f"({summary['training_rows']} {summary['training_format']} rows)"
        )
        by = summary.get("training_rows_by_positive_source")
        if by:
            lines.append(f"  rows by positive        {by['qrels']} qrels, {by['promoted']} promoted")
        by = summary.get("training_positives_by_source")
        if by:
            lines.append(f"  positives in the file   {by['qrels']} qrels, {by['promoted']} promoted")
    fig = summary["figures"]
    head = f"{' median  [p10 .. p90]':<32}rows"
    w = max([22] + [len(g) + 1 for g in (*fig["teacher_score"], *fig["margin_to_positive"])])  # a long reason
    lines.append(f"{'teacher score':<{w + 2}}{head}")
    lines += [f"  {g:<{w}}{_spread_text(d, '{:.3f}'):<32}{d['rows']}" for g, d in fig["teacher_score"].items()]
    lines.append(f"{'margin s - p':<{w + 2}}{head}   (p = the query's {fig['positive_reference']} positive score)")
    lines += [f"  {g:<{w}}{_spread_text(d):<32}{d['rows']}" for g, d in fig["margin_to_positive"].items()]
    for t in fig["margin_thresholds"]:
        span = f" (range {t['lo']:+.3g} .. {t['hi']:+.3g} over queries)" if t["hi"] > t["lo"] else ""
        lines.append(f"  {t['rule']} drops at s - p > {t['median']:+.3g}{span}")
    k = fig["kept_per_query"]
    lines.append(f"{'kept per query':<24}{k['mean']} on average"
                 + (f" of {k['requested']} requested; {k['queries_with_all']} queries with all" if k["requested"]
                    else "") + f", {k['queries_with_none']} with none")
    lines.append(f"{'kept negative rank':<24}{_spread_text(fig['kept_rank'], '{:.0f}')}")
    for i, x in enumerate(fig["top_suspects"]):
        lines.append(f"{'top suspects' if i == 0 else '':<24}{x['query_id']} / {x['doc_id']}: "
                     f"s {x['teacher_score']:.3f} vs best positive {x['positive_score']:.3f} ({x['reason'] or 'kept'}, "
                     f"{'promoted' if x['label'] == 'positive' else x['label']})")
    return "\n".join(lines)
