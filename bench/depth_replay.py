"""How many teacher pairs adaptive depth scores, replayed on a finished full-pool run: `score`'s own adaptive code
(`PairScorer.score_adaptively`, stopping on `filter_table`) with a teacher that answers from the run's scored table
instead of a model. No model runs, so this counts pairs (and checks that the filter keeps the same rows); it says
nothing about time.

    python bench/depth_replay.py RUN_DIR --config configs/default.toml [--first-window 50] [--json out.json]

RUN_DIR is a `hardneg run` directory scored with the whole pool (e.g. one of bench/score_depth.py's runs). The
filter and relabel configs come from --config; the replay uses `relabel.policy = drop` semantics for what counts
(adaptive depth is exact for the filter whatever relabel does; see docs/scoring.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hardneg import schemas  # noqa: E402
from hardneg.config import ScoreConfig, load_pipeline  # noqa: E402
from hardneg.io import data  # noqa: E402
from hardneg.io.stagedir import part_paths, read_part, read_stage  # noqa: E402
from hardneg.stages.filter import filter_table, near_duplicates  # noqa: E402
from hardneg.stages.score import PairScorer  # noqa: E402


class Replay:
    """A teacher whose scores are a finished run's."""

    def __init__(self, scores: dict[tuple[str, str], float]):
        self.scores = scores
        self.asked = 0

    def score(self, queries: list[str], docs: list[str]) -> np.ndarray:
        self.asked += len(queries)
        return np.array([self.scores[(q, d)] for q, d in zip(queries, docs)], dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--first-window", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_pipeline(args.config)
    data_dir = args.run / "data"
    tables = data.load(data_dir, ("corpus", "queries"))
    qtext = dict(zip(tables["queries"]["query_id"].to_pylist(), tables["queries"]["text"].to_pylist()))
    dtext = dict(zip(tables["corpus"]["doc_id"].to_pylist(), data.document_texts(tables["corpus"])))
    full = pl.from_arrow(read_stage(args.run / "scored", "score", schemas.SCORED))
    teacher = Replay({(qtext[q], dtext[d]): s for q, d, s in full.select("query_id", "doc_id", "teacher_score")
                      .iter_rows()})
    score_cfg = ScoreConfig(first_window=args.first_window)
    doc_key = data.text_keys_by_id(tables["corpus"])
    scorer = PairScorer(score_cfg, qtext, dtext, None, lambda: teacher, depth_rules=cfg.filter, doc_key=doc_key)
    same = True
    for part in part_paths(args.run / "mined"):
        mined = read_part(part, schemas.MINED)
        got = scorer.score(mined)
        ref = full.filter(pl.col("query_id").is_in(pl.from_arrow(mined)["query_id"].unique().implode()))
        dup = None
        if "near-duplicate" in cfg.filter.rules:
            dup = near_duplicates(mined, doc_key, None, None)
        kept = [pl.from_arrow(filter_table(t, cfg.filter, dup)).filter(pl.col("keep"))
                .select("query_id", "doc_id").sort("query_id", "doc_id") for t in (got, ref.to_arrow())]
        same &= kept[0].equals(kept[1])
    c = scorer.counts
    out = {"run": str(args.run), "config": str(args.config), "first_window": args.first_window,
           "distinct_pairs": c["distinct_pairs"] + c["skipped_pairs"], "pairs_scored": c["scored_pairs"],
           "pairs_skipped_by_depth": c["skipped_pairs"],
           "fewer_x": round((c["scored_pairs"] + c["skipped_pairs"]) / max(c["scored_pairs"], 1), 2),
           "filter_keeps_the_same_rows": same}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
