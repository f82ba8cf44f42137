"""`hardneg report`: one self-contained HTML page (plus its plots as PNGs) showing what the filter did to a run.

`figures()` (hardneg.figures) computes every figure's data from the relabeled table (pure); `collect()` reads a run
directory into it, joins texts for the suspected false negatives and gathers the manifests; `write()` renders the
plots with matplotlib and the page. The page makes no network request: plots are embedded as base64 PNG, CSS is inline, no script.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from hardneg import __version__, schemas
from hardneg.figures import FLAGGED, KEPT, POSITIVE, PROMOTED, figures, rules_of
from hardneg.io.data import document_texts
from hardneg.io.stagedir import atomic_write_bytes, input_dir, read_manifest, read_stage, require_finished
from hardneg.pipeline import LAYOUT
from hardneg.rules import RULES
from hardneg.summary import summarize


def _data_dir(run_dir: Path, manifests: dict) -> Path | None:
    """RUN/data, or the imported data the run was started from (`hardneg run` on an import directory)."""
    if (run_dir / LAYOUT["import"] / "_manifest.json").exists():
        return run_dir / LAYOUT["import"]
    if "score" not in manifests:
        return None
    return input_dir(run_dir / LAYOUT["score"], "import", manifests["score"])


def _texts(data_dir: Path | None, suspects: list[dict]) -> None:
    """Add the query's, the positive's and the candidate's text to each suspect (empty without the data)."""
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
COLORS = {POSITIVE: "#2b8a3e", PROMOTED: "#9c36b5", FLAGGED: "#e64980", KEPT: "#1c7ed6"}
REASON_COLORS = ["#e8590c", "#f59f00", "#c92a2a", "#868e96", "#5f3dc4", "#0b7285", "#a61e4d"]


def _color(group: str, groups: list[str]) -> str:
    if group in COLORS:
        return COLORS[group]
    dropped = [g for g in groups if g not in COLORS]
    return REASON_COLORS[dropped.index(group) % len(REASON_COLORS)]


def _panels(plt, values: dict[str, np.ndarray], xlabel: str, title: str, lines=()):
    """Small multiples: one panel per outcome on a shared x axis and shared bins, each with its own y scale, so
    that 100 promoted rows stay as visible as 100,000 `not_sampled` ones. `lines`: (x, style, label) drawn on
    every panel, named once in the last panel's legend."""
    from matplotlib.ticker import MaxNLocator

    groups = [g for g in values if len(values[g])] or list(values)[:1]
    allv = np.concatenate([values[g] for g in groups if len(values[g])] or [np.zeros(1)])
    lo, hi = float(np.min(allv)), float(np.max(allv))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 51)
    f, axes = plt.subplots(len(groups), 1, figsize=(11, 1.0 + 1.05 * len(groups)), sharex=True, squeeze=False)
    for ax, g in zip(axes[:, 0], groups):
        ax.hist(values[g], bins=edges, color=_color(g, list(values)), alpha=0.85)
        ax.set_ylabel("rows", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
        ax.text(1.005, 0.5, f"{g}\n{len(values[g])} rows", transform=ax.transAxes, fontsize=9, va="center")
        for x, style, label in lines:
            if isinstance(x, tuple):
                ax.axvspan(x[0], x[1], color="black", alpha=0.12, label=label)
            else:
                ax.axvline(x, color="black", linestyle=style, linewidth=1.3, label=label)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(xlabel)
    if lines:
        axes[-1, 0].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.45 if len(groups) > 1
                                                                                        else -0.6), ncol=2)
    return f


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

    lines = [(x, "--", f"{rule} threshold = {x:g}") for rule, x in fig["score_lines"].items()]
    save("scores", _panels(plt, fig["scores"], "teacher score", "Teacher scores by outcome (one panel each)", lines))

    lines = []
    for t in fig["margin_thresholds"]:
        if t["hi"] - t["lo"] > 1e-9:
            lines.append(((t["lo"], t["hi"]), None, f"{t['rule']}: threshold over queries"))
        lines.append((t["median"], "--", f"{t['rule']}: drop if s − p > {t['median']:.2g}"
                      + (" (median)" if t["hi"] > t["lo"] else "")))
    save("margins", _panels(plt, fig["margins"], f"s − p   (s = candidate's teacher score, p = its query's "
                                                  f"{fig['positive_reference']} positive score)",
                            "Negative candidates: margin to the positive (one panel per outcome)", lines))

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
    deepest = int(ranks.max(initial=1))  # the axis fits the kept ranks, not the mined depth
    a2.hist(ranks, bins=np.linspace(0.5, deepest + 0.5, min(deepest, 50) + 1), color=COLORS[KEPT], alpha=0.85)
    a2.set_xlabel(f"retriever rank of kept negatives (mined to rank {fig['top_k']})")
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
    """Each rule of a filter config with its values (a rule not registered here: its name)."""
    _, filter_cfg = rules_of(cfg)
    return "; ".join(f"{r}: {RULES[r].text(filter_cfg)}" if r in RULES else r for r in cfg.get("rules", []))


def _id(x, n: int = 24) -> str:
    """An id for a table cell: long ids cut in the middle, the whole id in the tooltip."""
    x = "" if x is None else str(x)
    shown = x if len(x) <= n else f"{x[:n - 9]}…{x[-8:]}"
    return f'<code title="{_e(x)}">{_e(shown)}</code>'


def _promoted_section(fig: dict, policy: str | None) -> list[str]:
    """Positives first: what relabeling added to the labeled positives, and how each promotion compares with the
    query's best labeled positive (the proxy of positive precision a run can show without more labels)."""
    n = fig["promoted_total"]
    flagged = fig["counts"].get(FLAGGED, 0)
    out = ["<h2>Positives: labeled and promoted</h2>"]
    if not n:
        out.append(f'<p class="note">No candidate was promoted to positive (relabel policy: {_e(policy)}); every '
                   f"positive in the training file is a labeled one."
                   + (f" {flagged} suspects are flagged for a judge (neither positive nor negative)." if flagged
                      else "") + "</p>")
        return out
    m = fig["promoted_margin"]
    out.append(f'<p class="note"><b>{n} candidates were promoted to positive</b> (relabel policy {_e(policy)}) '
               f"beside {fig['counts'].get(POSITIVE, 0)} labeled positives. A promoted positive is only as right as "
               f"the teacher's promotions: measure that before training on them (bench/README.md, \"promotion\"). "
               f"Their margin over the query's best labeled positive: median {np.median(m):+.3f}, "
               f"{int((m < 0.05).sum())} of {n} within 0.05 of it.</p>")
    rows = [[f'<td class="num">{i}</td>', f"<td>{_id(x['query_id'])}</td>", f"<td>{_id(x['doc_id'])}</td>",
             f'<td class="num">{x["teacher_score"]:.3f}</td>', f'<td class="num">{x["positive_score"]:.3f}</td>',
             f'<td class="num">{x["margin"]:+.3f}</td>', f'<td class="num">{_e(x["rank"])}</td>']
            for i, x in enumerate(fig["promoted"], 1)]
    out.append(_table(["#", "query", "promoted document", "s", "p<sub>best</sub>", "s − p<sub>best</sub>", "rank"],
                      rows))
    return out


def html_page(data: dict, plots: dict[str, Path]) -> str:
    fig, s, manifests = data["figures"], data["summary"], data["manifests"]
    fcfg = manifests["filter"]["config"]
    counts = fig["counts"]  # the same groups as the plots' panels, so cards and panels agree
    dropped = {g.removeprefix("dropped: "): n for g, n in sorted(counts.items()) if g.startswith("dropped: ")}
    cards = [("queries", s["queries"]), ("positives (qrels)", counts.get(POSITIVE, 0)),
             ("promoted to positive", counts.get(PROMOTED, 0)), ("candidates mined", s["candidates_mined"]),
             ("negatives kept", counts.get(KEPT, 0)), ("dropped", sum(dropped.values()))]
    if counts.get(FLAGGED):
        cards.append(("flagged for a judge", counts[FLAGGED]))
    if "training_rows" in s:
        cards.append((f"training rows ({s['training_format']})", s["training_rows"]))
    reasons = ", ".join(f"{r}: {n}" for r, n in dropped.items()) or "none"
    policy = manifests.get("relabel", {}).get("summary", {}).get("policy")
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
        *_promoted_section(fig, policy),
        "<h2>Teacher scores</h2>",
        '<p class="note">Every mined row by outcome, one panel each with its own vertical scale: labeled positives,'
        " promoted candidates, flagged ones, kept negatives, and dropped candidates by the reason the filter gave (a"
        " promoted or flagged candidate is counted as such, not under the reason that dropped it).</p>",
        _img(plots["scores"], "teacher score histograms"),
        "<h2>Margins to the positive</h2>",
    ]
    rules = ", ".join(t["rule"] for t in fig["margin_thresholds"])
    out += ['<p class="note">s − p for every negative candidate. '
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
        f'<p class="note">The {len(fig["suspects"])} dropped (or promoted, or flagged) candidates the teacher scored highest '
        "relative to their query's best-scored labeled positive (s − p<sub>best</sub>, largest first; "
        "<code>not_sampled</code> rows are left out). Read each candidate against the positive: a candidate that "
        "answers the query as well is a false negative the filter rightly removed.</p>",
    ]
    rows = [[f'<td class="num">{i}</td>',
             f'<td class="text">{_id(x["query_id"])}<br>{_e(_cut(x.get("query_text", "")))}</td>',
             f'<td class="text">{_id(x.get("positive_id"))}<br>{_e(_cut(x.get("positive_text", "")))}</td>',
             f'<td class="text">{_id(x["doc_id"])}<br>{_e(_cut(x.get("candidate_text", "")))}</td>',
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
    atomic_write_bytes(out, html_page(data, plots).encode("utf-8"))
    return plots
