"""`hardneg report`: one self-contained HTML page (plus its plots as PNGs) showing what the filter did to a run.

`figures()` computes every figure's data from the relabeled table (pure); `collect()` reads a run directory into it,
joins texts for the suspected false negatives and gathers the manifests; `write()` renders the plots with matplotlib
and the page. The page makes no network request: plots are embedded as base64 PNG, CSS is inline, no script.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import polars as pl

from hardneg import __version__, schemas
from hardneg.io.stagedir import read_manifest, read_stage, require_finished
from hardneg.pipeline import LAYOUT
from hardneg.stages.filter import positive_reference

# rules whose threshold is a margin to the query's positive: drop if s - p > this (p = the query's positive score)
MARGIN_RULES = {
    "perc-pos": lambda cfg: -pl.col("_pos").abs() * (1 - cfg["ratio"]),
    "margin-pos": lambda cfg: pl.lit(-cfg["margin"]),
}
POSITIVE, PROMOTED, KEPT = "positive (qrels)", "promoted to positive", "kept negative"
FLAGGED = "flagged (for a judge)"


def _group() -> pl.Expr:
    """Each row's group in the plots: labeled positive, promoted, kept negative, or `dropped: <reason>`."""
    return (
        pl.when(pl.col("is_positive")).then(pl.lit(POSITIVE))
        .when(pl.col("label") == "positive").then(pl.lit(PROMOTED))  # promoted by teacher score or as a duplicate
        .when(pl.col("label") == "flagged").then(pl.lit(FLAGGED))  # keep-flagged: neither promoted nor dropped
        .when(pl.col("label") == "negative").then(pl.lit(KEPT))
        .otherwise(pl.lit("dropped: ") + pl.col("reason").fill_null("?"))
    )


def _by_group(df: pl.DataFrame, column: str) -> dict[str, np.ndarray]:
    order = [POSITIVE, PROMOTED, FLAGGED, KEPT] + sorted(g for g in df["group"].unique() if g.startswith("dropped: "))
    return {g: df.filter(pl.col("group") == g)[column].to_numpy() for g in order if g in set(df["group"])}


def figures(relabeled: pl.DataFrame, filter_cfg: dict, top: int = 20) -> dict:
    """Pure: the relabeled table and the filter's config -> the data of every figure and table of the report.

    Values are split by `_group()`. Margins are `s - p` for every negative candidate (non-positive row), `p` its
    query's reference positive score as the filter computed it (`positive_reference`: min/mean/max of the labeled
    positives). Suspects: candidates dropped by a rule (not `not_sampled`) or promoted, by s minus the score of the
    query's best-scored labeled positive (`positive_id`), largest first: the ones the teacher likes most compared
    with what a person labeled relevant.
    """
    df = relabeled.with_columns(_group().alias("group"))
    ref = positive_reference(df, filter_cfg.get("positive_reference", "min"))
    cand = df.filter(~pl.col("is_positive")).join(ref, on="query_id", how="left").filter(pl.col("_pos").is_not_null())
    rules = list(filter_cfg.get("rules", []))
    # a rule's threshold on s - p is one number (margin-pos) or depends on the query's p (perc-pos): its range
    # over the queries, a candidate right of `hi` is dropped whatever its query, one left of `lo` never
    thresholds = []
    for rule in [r for r in rules if r in MARGIN_RULES and cand.height]:
        t = cand.select(MARGIN_RULES[rule](filter_cfg).alias("t"))["t"]
        thresholds.append({"rule": rule, "lo": float(t.min()), "hi": float(t.max()), "median": float(t.median())})
    kept = df.filter(pl.col("label") == "negative")
    per_query = df.select("query_id").unique().join(kept.group_by("query_id").len(), on="query_id", how="left")
    best = (df.filter(pl.col("is_positive")).sort(["teacher_score", "doc_id"], descending=[True, False])
            .group_by("query_id", maintain_order=True)
            .agg(pl.col("doc_id").first().alias("positive_id"),
                 pl.col("teacher_score").first().alias("positive_score")))
    suspects = (
        df.filter(~pl.col("is_positive") & (((pl.col("reason") != "not_sampled") & pl.col("reason").is_not_null())
                                            | (pl.col("label_source") == "teacher")))
        .join(best, on="query_id", how="inner")
        .with_columns((pl.col("teacher_score") - pl.col("positive_score")).alias("margin"))
        .sort(["margin", "query_id", "doc_id"], descending=[True, False, False])
        .head(top)
        .select("query_id", "doc_id", "rank", "teacher_score", "positive_id", "positive_score", "margin", "reason",
                "label")
    )
    return {
        "scores": _by_group(df, "teacher_score"),
        "score_lines": {r: filter_cfg[k] for r, k in (("max-score", "max_score"), ("min-score", "min_score"))
                        if r in rules and filter_cfg.get(k) is not None},
        "positive_reference": filter_cfg.get("positive_reference", "min"),
        "margins": _by_group(cand.with_columns((pl.col("teacher_score") - pl.col("_pos")).alias("m")), "m"),
        "margin_thresholds": thresholds,
        "kept_per_query": np.sort(per_query["len"].fill_null(0).to_numpy()),
        "requested_per_query": filter_cfg.get("negatives_per_query", 0),
        "kept_ranks": kept["rank"].drop_nulls().to_numpy(),
        "top_k": int(df["rank"].max() or 0),
        "suspects": suspects.to_dicts(),
    }


def _data_dir(run_dir: Path, manifests: dict) -> Path | None:
    """RUN/data, or the imported data the run was started from (`hardneg run` on an import directory)."""
    if (run_dir / LAYOUT["import"] / "_manifest.json").exists():
        return run_dir / LAYOUT["import"]
    for inp in manifests.get("score", {}).get("inputs", []):
        path = Path(inp["path"])
        if (path / "_manifest.json").exists() and read_manifest(path).get("stage") == "import":
            return path
    return None


def _texts(data_dir: Path | None, suspects: list[dict]) -> None:
    """Add the query's, the positive's and the candidate's text to each suspect (empty without the data)."""
    import pyarrow.parquet as pq

    from hardneg.io.data import document_texts

    queries, docs = {}, {}
    if data_dir is not None and suspects:
        qids = sorted({s["query_id"] for s in suspects})
        ids = sorted({s["doc_id"] for s in suspects} | {s["positive_id"] for s in suspects})
        q = pq.read_table(data_dir / "queries.parquet", filters=[("query_id", "in", qids)])
        queries = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
        c = pq.read_table(data_dir / "corpus.parquet", filters=[("doc_id", "in", ids)])
        docs = dict(zip(c["doc_id"].to_pylist(), document_texts(c)))
    for s in suspects:
        s["query_text"] = queries.get(s["query_id"], "")
        s["positive_text"] = docs.get(s["positive_id"], "")
        s["candidate_text"] = docs.get(s["doc_id"], "")


def collect(run_dir: Path, top: int = 20) -> dict:
    """Read a run directory: figures, texts of the suspects, every stage's manifest, the summary."""
    from hardneg.summary import summarize

    run_dir = Path(run_dir)
    relabeled_dir = run_dir / LAYOUT["relabel"]
    manifests = {}
    for stage, name in LAYOUT.items():
        if (run_dir / name / "_manifest.json").exists():
            manifests[stage] = read_manifest(run_dir / name)
    for train in sorted(run_dir.glob("train.*.manifest.json")):
        manifests["export"] = json.loads(train.read_text())
    require_finished(run_dir / LAYOUT["filter"], "filter")
    df = pl.from_arrow(read_stage(relabeled_dir, "relabel", schemas.RELABELED))
    fig = figures(df, manifests["filter"]["config"], top=top)
    _texts(_data_dir(run_dir, manifests), fig["suspects"])
    return {"run_dir": str(run_dir), "figures": fig, "manifests": manifests, "summary": summarize(run_dir, df)}


# -- rendering -------------------------------------------------------------------------------------------------
COLORS = {POSITIVE: "#2b8a3e", PROMOTED: "#9c36b5", KEPT: "#1c7ed6"}
REASON_COLORS = ["#e8590c", "#f59f00", "#c92a2a", "#868e96", "#5f3dc4", "#0b7285", "#a61e4d"]


def _color(group: str, groups: list[str]) -> str:
    if group in COLORS:
        return COLORS[group]
    dropped = [g for g in groups if g not in COLORS]
    return REASON_COLORS[dropped.index(group) % len(REASON_COLORS)]


def _hist(ax, values: dict[str, np.ndarray], bins: int = 40) -> None:
    """Histograms on shared bins: positives as an outline, every other group stacked."""
    allv = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
    lo, hi = float(np.min(allv)), float(np.max(allv))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    groups = list(values)
    bars = [g for g in groups if g != POSITIVE and len(values[g])]
    if bars:
        ax.hist([values[g] for g in bars], bins=edges, stacked=True, label=[f"{g} ({len(values[g])})" for g in bars],
                color=[_color(g, groups) for g in bars], alpha=0.85)
    if POSITIVE in values and len(values[POSITIVE]):
        ax.hist(values[POSITIVE], bins=edges, histtype="step", linewidth=2, color=COLORS[POSITIVE],
                label=f"{POSITIVE} ({len(values[POSITIVE])})")
    ax.set_ylabel("rows")


def _legend(ax) -> None:
    """The legend beside the plot (never over the bars), when there is anything to name."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _plots(fig: dict, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name: str, f) -> None:
        f.tight_layout()
        paths[name] = out_dir / f"{name}.png"
        f.savefig(paths[name], dpi=100)
        plt.close(f)

    f, ax = plt.subplots(figsize=(11, 4))
    _hist(ax, fig["scores"])
    for rule, x in fig["score_lines"].items():
        ax.axvline(x, color="black", linestyle="--", linewidth=1.5, label=f"{rule} threshold = {x:g}")
    ax.set_xlabel("teacher score")
    ax.set_title("Teacher scores by outcome")
    _legend(ax)
    save("scores", f)

    f, ax = plt.subplots(figsize=(11, 4))
    _hist(ax, fig["margins"])
    for t in fig["margin_thresholds"]:
        if t["hi"] - t["lo"] > 1e-9:
            ax.axvspan(t["lo"], t["hi"], color="black", alpha=0.12,
                       label=f"{t['rule']}: threshold over queries")
        ax.axvline(t["median"], color="black", linestyle="--", linewidth=1.5,
                   label=f"{t['rule']}: drop if s − p > {t['median']:.2g}"
                   + (" (median)" if t["hi"] > t["lo"] else ""))
    ax.set_xlabel(f"s − p   (s = candidate's teacher score, "
                  f"p = its query's {fig['positive_reference']} positive score)")
    ax.set_title("Negative candidates: margin to the positive")
    _legend(ax)
    save("margins", f)

    f, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    counts = fig["kept_per_query"]
    n = int(max(counts.max(initial=0), fig["requested_per_query"]))
    a1.hist(counts, bins=np.arange(-0.5, n + 1.5), color=COLORS[KEPT], alpha=0.85, rwidth=0.85)
    if fig["requested_per_query"]:
        a1.axvline(fig["requested_per_query"], color="black", linestyle="--", zorder=0,
                   label=f"requested: {fig['requested_per_query']}")
        a1.legend(fontsize=8, frameon=False)
    a1.set_xlabel("kept negatives per query")
    a1.set_ylabel("queries")
    a1.set_title(f"Per-query yield ({len(counts)} queries)")
    ranks = fig["kept_ranks"]
    top_k = max(fig["top_k"], int(ranks.max(initial=1)))
    a2.hist(ranks, bins=np.linspace(0.5, top_k + 0.5, min(top_k, 50) + 1), color=COLORS[KEPT], alpha=0.85)
    a2.set_xlabel("retriever rank of kept negatives")
    a2.set_ylabel("kept negatives")
    a2.set_title(f"Ranks of kept negatives ({len(ranks)})")
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    save("yield", f)
    return paths


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0;
       background: #f8f9fa; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #dee2e6;
       padding-bottom: 4px; }
.sub { color: #6c757d; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #dee2e6; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 22px; } .card span { color: #6c757d; font-size: 13px; }
img { max-width: 100%; display: block; margin: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #dee2e6; padding: 5px 7px; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 320px; }
code, pre { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; margin: 0; }
.note { color: #495057; font-size: 14px; }
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _cut(text: str, n: int = 320) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _rule_text(cfg: dict) -> str:
    parts = []
    for rule in cfg.get("rules", []):
        parts.append({
            "perc-pos": f"perc-pos: drop if s > p − |p|·(1 − {cfg.get('ratio')})",
            "margin-pos": f"margin-pos: drop if s > p − {cfg.get('margin')}",
            "max-score": f"max-score: drop if s > {cfg.get('max_score')}",
            "min-score": f"min-score: drop if s < {cfg.get('min_score')}",
        }.get(rule, rule))
    return "; ".join(parts)


def html_page(data: dict, plots: dict[str, Path]) -> str:
    fig, s, manifests = data["figures"], data["summary"], data["manifests"]
    fcfg = manifests["filter"]["config"]
    cards = [("queries", s["queries"]), ("positives (qrels)", s["positives"]),
             ("candidates mined", s["candidates_mined"]), ("negatives kept", s["negatives_kept"]),
             ("dropped", sum(s["dropped_by_reason"].values())), ("promoted to positive", s["relabeled_to_positive"])]
    if "training_rows" in s:
        cards.append((f"training rows ({s['training_format']})", s["training_rows"]))
    reasons = ", ".join(f"{r}: {n}" for r, n in s["dropped_by_reason"].items()) or "none"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        f"<title>hardneg report: {_e(data['run_dir'])}</title><style>{CSS}</style></head><body><main>",
        f"<h1>hardneg report</h1><p class=\"sub\">run <code>{_e(data['run_dir'])}</code> · hardneg {_e(__version__)}"
        f" · filter: {_e(_rule_text(fcfg))}, p = the query's {_e(fig['positive_reference'])} positive score</p>",
        '<div class="cards">' + "".join(f"<div class=\"card\"><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                        for k, v in cards) + "</div>",
        f'<p class="note">Dropped by reason: {_e(reasons)}.</p>',
        "<h2>Teacher scores</h2>",
        '<p class="note">Every mined row by outcome: labeled positives (outline), promoted candidates, kept negatives,'
        " and dropped candidates coloured by the reason the filter gave (a promoted candidate is counted as promoted,"
        " not under the reason that dropped it).</p>",
        _img(plots["scores"], "teacher score histograms"),
        "<h2>Margins to the positive</h2>",
    ]
    rules = ", ".join(t["rule"] for t in fig["margin_thresholds"])
    out += [f'<p class="note">s − p for every negative candidate. '
            + (f"Dashed: the {_e(rules)} threshold (shaded: its range over the queries, for a rule that scales with "
               "p); candidates to the right of it were dropped." if rules else
               "No rule compares with the positive; shown for reference.") + "</p>",
            _img(plots["margins"], "margin distribution")]
    req = fig["requested_per_query"]
    counts = fig["kept_per_query"]
    out += [
        "<h2>Per-query yield and ranks</h2>",
        f'<p class="note">{int((counts == 0).sum())} of {len(counts)} queries have no kept negative'
        + (f"; {int((counts >= req).sum())} have the {req} requested" if req else "") + ".</p>",
        _img(plots["yield"], "per-query yield and rank distribution"),
        "<h2>Suspected false negatives</h2>",
        f'<p class="note">The {len(fig["suspects"])} dropped (or promoted) candidates the teacher scored highest '
        "relative to their query's best-scored labeled positive (s − p<sub>best</sub>, largest first; "
        "<code>not_sampled</code> rows are left out). Read each candidate against the positive: a candidate that "
        "answers the query as well is a false negative the filter rightly removed.</p>",
    ]
    rows = [[f'<td class="num">{i}</td>',
             f'<td class="text"><code>{_e(x["query_id"])}</code><br>{_e(_cut(x.get("query_text", "")))}</td>',
             f'<td class="text"><code>{_e(x.get("positive_id"))}</code><br>{_e(_cut(x.get("positive_text", "")))}</td>',
             f'<td class="text"><code>{_e(x["doc_id"])}</code><br>{_e(_cut(x.get("candidate_text", "")))}</td>',
             f'<td class="num">{x["teacher_score"]:.3f}</td>', f'<td class="num">{x["positive_score"]:.3f}</td>',
             f'<td class="num">{x["margin"]:+.3f}</td>', f'<td class="num">{_e(x["rank"])}</td>',
             f"<td>{_e(x['reason'] or '')}<br><b>{'promoted' if x['label'] == 'positive' else _e(x['label'])}</b></td>"]
            for i, x in enumerate(fig["suspects"], 1)]
    out.append(_table(["#", "query", "positive (best scored)", "candidate", "s", "p<sub>best</sub>",
                       "s − p<sub>best</sub>", "rank",
                       "reason / label"], rows) if rows else '<p class="note">None.</p>')
    out += ["<h2>Provenance</h2>", _provenance(manifests), "</main></body></html>"]
    return "\n".join(out) + "\n"


def _provenance(manifests: dict) -> str:
    rows = []
    for stage, m in manifests.items():
        models = ", ".join(f"{k}: {v}" for k, v in (m.get("models") or {}).items())
        inputs = "<br>".join(_e(i["path"]) for i in m.get("inputs", []))
        if stage == "import":
            inputs = _e(m.get("config", {}).get("source", ""))
        config, summary = _keys(m.get("config", {})), _keys(m.get("summary", {}))
        wall = m.get("wall_seconds")
        rows.append([f"<td><b>{_e(stage)}</b><br>{_e(m.get('status', ''))}</td>",
                     f"<td>{_e(m.get('hardneg_version', ''))}</td>", f"<td>{_e(models)}</td>",
                     f'<td class="num">{"" if wall is None else f"{wall:.1f} s"}</td>',
                     f"<td><pre>{_e(config)}</pre></td>", f"<td><pre>{_e(summary)}</pre></td>",
                     f"<td><code>{inputs}</code></td>"])
    total = sum(m.get("wall_seconds") or 0 for m in manifests.values())
    return (f'<p class="note">Read from every stage\'s <code>_manifest.json</code>; {total:.1f} s of wall time in '
            "all.</p>" + _table(["stage", "version", "models", "wall time", "config", "summary", "inputs"], rows))


def _keys(d: dict) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in sorted(d.items()))


def write(data: dict, out: Path) -> dict[str, Path]:
    """Render the plots into `<out stem>_files/` beside `out` and the self-contained page into `out`."""
    out = Path(out)
    plots = _plots(data["figures"], out.parent / f"{out.stem}_files")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html_page(data, plots), encoding="utf-8")
    tmp.replace(out)
    return plots
