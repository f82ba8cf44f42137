"""How right is an LLM judge about the suspects, next to the offline teacher's own promotion rule?

    python bench/judge.py --data ../shared/data/nfcorpus --split test --seed 0 --queries 50 --out bench/results

Protocol (bench/protocol.py): the queries of the split with >= 2 relevant documents keep one seeded labeled positive
and hide the rest; `--queries` of them (a seeded sample) go through `hardneg run` with
bench/configs/judge-suspects.toml (BM25 top 100, the default's MiniLM teacher and filter, the judge's default
suspect rule, `relabel` policy rlhn). A suspect is *relevant* when it is a hidden positive of its query (or an exact
text copy of a relevant document). On the same suspects:

* the judge: a suspect is called relevant when P(yes) >= t, for t over a grid (the curve) and the config's threshold;
* the teacher: relabel's promotion rule, teacher score >= the query's best positive score (`positive_reference =
  max`), and the sweep `teacher score >= best positive + delta`;
* precision = relevant among those called relevant; recall = of the relevant suspects, the share called relevant;
  AUC = the chance that a relevant suspect scores above an irrelevant one (threshold-free); base rate = relevant
  suspects / suspects (what calling everything relevant scores).

`--judge 'backend=openai,model=Qwen/Qwen2.5-7B-Instruct,endpoint=http://gpu:8000/v1'` (repeatable: a cascade) swaps
the config's judges for others, e.g. a served 7B+ model (docs/judge.md); `--label` names the row. Results are kept
per label in OUT/judge.json (rows of other labels stay), with OUT/judge.md and OUT/judge.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.benchutil import read_beir, write_beir  # noqa: E402
from bench.protocol import expand_duplicates, hide_positives  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRID = [round(0.05 * i, 2) for i in range(1, 20)]
DELTAS = [-0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]


def write_copy(src: Path, out: Path, split: str, labeled: dict[str, str]) -> Path:
    """BEIR copy whose qrels hold only the sampled queries' labeled positives (corpus and queries linked)."""
    return write_beir(out, split, sorted(labeled.items()), src=src)


def pr(called: list[bool], truth: list[bool]) -> dict:
    n = sum(called)
    hits = sum(c and t for c, t in zip(called, truth))
    rel = sum(truth)
    return {"called": n, "hits": hits, "precision": hits / n if n else None, "recall": hits / rel if rel else None}


def auc(scores: list[float], truth: list[bool]) -> float | None:
    """P(score of a relevant > score of an irrelevant), ties counting half (Mann-Whitney)."""
    pos = [s for s, t in zip(scores, truth) if t and s is not None]
    neg = [s for s, t in zip(scores, truth) if not t and s is not None]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def measure(judged, relevant: dict[str, set[str]], threshold: float) -> dict:
    import polars as pl

    df = pl.from_arrow(judged)
    best = df.filter(pl.col("is_positive")).group_by("query_id").agg(pl.col("teacher_score").max().alias("best"))
    sus = df.filter(pl.col("suspect")).join(best, on="query_id", how="left").sort("query_id", "doc_id")
    truth = [d in relevant.get(q, set()) for q, d in sus.select("query_id", "doc_id").iter_rows()]
    js = sus["judge_score"].to_list()
    margin = (sus["teacher_score"] - sus["best"]).to_list()
    by_reason = {}
    for reason, t in zip(sus["reason"].fill_null("kept").to_list(), truth):
        r = by_reason.setdefault(reason, {"suspects": 0, "relevant": 0})
        r["suspects"] += 1
        r["relevant"] += t
    return {
        "suspects": sus.height, "queries": sus["query_id"].n_unique(), "relevant_suspects": sum(truth),
        "base_rate": sum(truth) / len(truth) if truth else None, "by_reason": by_reason,
        "unparsed": sum(s is None for s in js),
        "judge": {"threshold": threshold, **pr([s is not None and s >= threshold for s in js], truth),
                  "auc": auc(js, truth),
                  "curve": [{"threshold": t, **pr([s is not None and s >= t for s in js], truth)} for t in GRID]},
        "teacher": {"rule": "teacher score >= best positive", **pr([m >= 0 for m in margin], truth),
                    "auc": auc(margin, truth),
                    "curve": [{"delta": d, **pr([m >= d for m in margin], truth)} for d in DELTAS]},
    }


def fmt(x, pct=True):
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def table(rows: list[dict]) -> str:
    out = ["| rule | suspects (relevant) | called relevant | precision | recall | AUC |",
           "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        m = row["metrics"]
        base = f"{m['suspects']} ({m['relevant_suspects']}, {fmt(m['base_rate'])})"
        j, t = m["judge"], m["teacher"]
        out.append(f"| judge {row['label']}, P(yes) >= {j['threshold']} | {base} | {j['called']} | "
                   f"{fmt(j['precision'])} | {fmt(j['recall'])} | {fmt(j['auc'], False)} |")
        best = max((c for c in j["curve"] if c["precision"] is not None and c["called"] >= 5),
                   key=lambda c: c["precision"], default=None)
        if best:
            out.append(f"| judge {row['label']}, best precision over the grid (P(yes) >= {best['threshold']}) | "
                       f"{base} | {best['called']} | {fmt(best['precision'])} | {fmt(best['recall'])} | |")
        out.append(f"| teacher ({row['teacher']}): {t['rule']} | {base} | {t['called']} | {fmt(t['precision'])} | "
                   f"{fmt(t['recall'])} | {fmt(t['auc'], False)} |")
        for c in t["curve"]:
            if c["delta"] in (0.1, 0.2, 0.3):
                out.append(f"| teacher: score >= best positive {c['delta']:+.2f} | {base} | {c['called']} | "
                           f"{fmt(c['precision'])} | {fmt(c['recall'])} | |")
    return "\n".join(out)


def curves_table(row: dict) -> str:
    m = row["metrics"]
    out = [f"P(yes) threshold curve of judge {row['label']} on {m['suspects']} suspects:", "",
           "| P(yes) >= | called | precision | recall |", "|---:|---:|---:|---:|"]
    out += [f"| {c['threshold']} | {c['called']} | {fmt(c['precision'])} | {fmt(c['recall'])} |"
            for c in m["judge"]["curve"]]
    out += ["", "teacher sweep (score >= best positive + delta):", "",
            "| delta | called | precision | recall |", "|---:|---:|---:|---:|"]
    out += [f"| {c['delta']:+.2f} | {c['called']} | {fmt(c['precision'])} | {fmt(c['recall'])} |"
            for c in m["teacher"]["curve"]]
    return "\n".join(out)


def render(data: dict) -> str:
    """The Markdown of bench/README.md's `judge` block (bench/tables.py) from bench/results/judge.json."""
    rows = data["rows"]
    runs = "; ".join(f"`{r['run']['command']}` ({r['run']['started']} UTC, load {r['run']['load_average'][0]})"
                     for r in rows)
    return (table(rows) + "\n\n" + "\n\n".join(curves_table(r) for r in rows)
            + f"\n\n![judge and teacher curves](results/judge.png)\n\nMeasured by {runs}.\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        m = row["metrics"]
        c = [x for x in m["judge"]["curve"]]
        a.plot([x["threshold"] for x in c], [x["precision"] for x in c], "o-", label=f"{row['label']}: precision")
        a.plot([x["threshold"] for x in c], [x["recall"] for x in c], "s--", label=f"{row['label']}: recall")
        b.plot([x["recall"] or 0 for x in c], [x["precision"] for x in c], "o-", label=f"judge {row['label']}")
    m = rows[0]["metrics"]
    t = m["teacher"]["curve"]
    a.axhline(m["base_rate"], color="grey", lw=1, ls=":", label="base rate (all suspects)")
    a.set_xlabel("judge threshold: called relevant when P(yes) >=")
    a.set_ylabel("share")
    a.set_ylim(0, 1.02)
    a.set_title("LLM judge on the suspects")
    a.legend(fontsize=7)
    b.plot([x["recall"] or 0 for x in t], [x["precision"] for x in t], "^-", color="black",
           label=f"teacher: score >= best positive + delta ({t[0]['delta']}..{t[-1]['delta']})")
    tp = m["teacher"]
    b.plot([tp["recall"] or 0], [tp["precision"]], "*", ms=14, color="red", label="teacher rule (delta 0)")
    b.axhline(m["base_rate"], color="grey", lw=1, ls=":", label="base rate")
    b.set_xlabel("recall of relevant suspects")
    b.set_ylabel("precision")
    b.set_xlim(0, 1.02)
    b.set_ylim(0, 1.02)
    b.set_title("precision / recall: judge vs teacher")
    b.legend(fontsize=7)
    fig.suptitle(f"{m['suspects']} suspects of {m['queries']} queries, hidden-positive protocol", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "nfcorpus")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=50, help="seeded sample of the protocol's queries")
    ap.add_argument("--config", type=Path, default=ROOT / "bench" / "configs" / "judge-suspects.toml")
    ap.add_argument("--judge", action="append", default=[], help="replace the config's judges (key=value pairs, "
                    "as `hardneg judge --judge`); repeat for a cascade")
    ap.add_argument("--label", default=None, help="the row's name (default: the last judge's backend:model)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / ".cache" / "judge")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)

    from hardneg import pipeline
    from hardneg.config import load_pipeline, validate
    from hardneg.judges import label, parse_spec, spec_from_dict
    from hardneg.io.stagedir import read_manifest, read_stage
    from hardneg import schemas

    cfg = load_pipeline(args.config)
    if args.judge:
        cfg = dataclasses.replace(cfg, judge=validate(dataclasses.replace(
            cfg.judge, judges=[parse_spec(j) for j in args.judge]), "--judge"))
    last = spec_from_dict(cfg.judge.judges[-1], "judge")
    name = args.label or label(last)

    corpus, _, qrels = read_beir(args.data, args.split)
    labeled, hidden = hide_positives(qrels, args.seed)
    relevant = expand_duplicates({q: hidden[q] | {labeled[q]} for q in hidden}, corpus, labeled)
    sample = sorted(random.Random(args.seed).sample(sorted(labeled), min(args.queries, len(labeled))))
    tag = f"{args.data.name}-{args.split}-seed{args.seed}-q{len(sample)}"
    copy = write_copy(args.data, args.work / f"hidden-{tag}", args.split, {q: labeled[q] for q in sample})
    run_dir = args.work / f"run-{tag}-{args.config.stem}" / name.replace("/", "_").replace(":", "_")
    print(f"[bench] {len(sample)} of {len(labeled)} protocol queries; run in {run_dir}", flush=True)
    started = time.time()
    paths = pipeline.run(copy, run_dir, cfg, overwrite=True, log=lambda m: print(m, flush=True))
    judged = read_stage(paths["judge"], "judge", schemas.JUDGED)
    jm = read_manifest(paths["judge"])
    metrics = measure(judged, relevant, last.threshold)
    row = {"label": name, "judges": [label(spec_from_dict(j, "judge")) for j in cfg.judge.judges],
           "teacher": f"{cfg.score.teacher_kind} {cfg.score.model}", "metrics": metrics,
           "judge_stage": {"wall_seconds": jm.get("wall_seconds"), "calls": jm["summary"].get("calls")},
           "run": {"command": "python bench/judge.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
                   "load_average": [round(x, 2) for x in os.getloadavg()], "config": str(args.config.name),
                   "queries": len(sample), "seed": args.seed, "data": args.data.name, "split": args.split}}
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "judge.json"
    rows = [r for r in (json.loads(store.read_text())["rows"] if store.exists() else []) if r["label"] != name]
    rows.append(row)
    store.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = render({"rows": rows})
    (args.out / "judge.md").write_text(md)
    plot(rows, args.out / "judge.png")
    print(md)
    print(f"[bench] judge stage: {row['judge_stage']}; wrote {store}, judge.md, judge.png")


if __name__ == "__main__":
    main()
