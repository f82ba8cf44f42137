"""Property tests (hypothesis): readers round-trip; filters never emit a labeled positive as a negative, never keep a
negative beyond the active rule's bound, are idempotent on the kept set, and give the same rows however the queries
are split into parts; mine gives the same rows for any query batch size."""

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import invoke
from hardneg import schemas
from hardneg.config import POSITIVE_REFERENCES, SAMPLING, FilterConfig, RelabelConfig

# the rules that bound a kept negative's teacher score (rank-window and near-duplicate are tested in test_filters.py)
SCORE_RULES = ("perc-pos", "margin-pos", "max-score", "min-score")
from hardneg.io.readers import ALIASES, QREL_ALIASES, read_table
from hardneg.io.stagedir import read_stage
from hardneg.stages.filter import filter_table
from hardneg.stages.relabel import relabel_table

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- readers ---------------------------------------------------------------------------------------------------------
COLUMN_NAMES = {a for v in {**ALIASES, **QREL_ALIASES}.values() for a in v}
ids = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=6).filter(
    lambda s: s.lower() not in COLUMN_NAMES
)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"), max_size=30)


@st.composite
def corpora(draw):
    doc_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    return [{"doc_id": d, "title": draw(texts), "text": draw(texts)} for d in doc_ids]


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "tsv":  # MS MARCO layout: id, text, title; no header
        path.write_text("".join(f"{r['doc_id']}\t{r['text']}\t{r['title']}\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["jsonl", "tsv", "parquet"])
@SETTINGS
@given(rows=corpora())
@example(rows=[{"doc_id": "d1", "title": "title", "text": "text"}])  # column names as data are not a header
def test_corpus_readers_round_trip(tmp_path, fmt, rows):
    path = tmp_path / f"corpus.{fmt}"
    write(path, rows, fmt)
    assert read_table(path, "corpus").to_pylist() == rows


@SETTINGS
@given(rows=st.lists(st.tuples(ids, ids, st.integers(-3, 10**6)), max_size=10))
def test_qrels_tsv_and_jsonl_round_trip(tmp_path, rows):
    want = [{"query_id": q, "doc_id": d, "relevance": r} for q, d, r in rows]
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in rows))
    (tmp_path / "qrels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in want))
    for name in ("qrels.tsv", "qrels.jsonl"):
        assert read_table(tmp_path / name, "qrels").to_pylist() == want


# -- filters ---------------------------------------------------------------------------------------------------------
scores = st.one_of(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.95, 1.0]),
                   st.floats(-3, 3, allow_nan=False, width=32))


@st.composite
def scored_tables(draw):
    """Rows of the scored schema, grouped by query like mine writes them: every query has at least one positive."""
    rows = []
    for q in range(draw(st.integers(1, 5))):
        n_pos, n_cand = draw(st.integers(1, 3)), draw(st.integers(0, 8))
        ranks = draw(st.permutations(range(1, n_pos + n_cand + 1)))
        query_rows = []
        for i in range(n_pos + n_cand):
            positive = i < n_pos
            retrieved = not positive or draw(st.booleans())
            query_rows.append({"query_id": f"q{q}", "doc_id": f"d{q}-{i}", "rank": ranks[i] if retrieved else None,
                               "retriever": "bm25" if retrieved else "qrels", "retriever_score": None,
                               "is_positive": positive, "teacher_score": draw(scores)})
        rows += draw(st.permutations(query_rows))
    return pa.Table.from_pylist(rows, schema=schemas.SCORED)


@st.composite
def filter_configs(draw):
    rules = draw(st.lists(st.sampled_from(SCORE_RULES), min_size=1, max_size=4, unique=True))
    return FilterConfig(
        rules=rules,
        ratio=draw(st.floats(0, 1)),
        margin=draw(st.floats(-0.5, 0.5)),
        max_score=draw(scores) if "max-score" in rules else None,
        min_score=draw(scores) if "min-score" in rules else None,
        positive_reference=draw(st.sampled_from(POSITIVE_REFERENCES)),
        negatives_per_query=draw(st.integers(0, 4)),
        sampling=draw(st.sampled_from(SAMPLING)),
        seed=draw(st.integers(0, 2**31)),
    )


def reference(df: pl.DataFrame, how: str) -> dict[str, float]:
    pos = df.filter(pl.col("is_positive"))
    return {q: float(getattr(np, how)(np.asarray(g["teacher_score"], dtype=np.float64)))
            for (q,), g in pos.group_by("query_id")}


def violated(cfg: FilterConfig, s: float, p: float, tol: float = 1e-6) -> list[str]:
    """The active rules whose bound a kept negative with score `s` (reference positive `p`) breaks, beyond `tol`
    (scores are float32; the test recomputes the bounds in float64)."""
    checks = {
        "perc-pos": lambda: s > p - abs(p) * (1 - cfg.ratio) + tol,
        "margin-pos": lambda: s > p - cfg.margin + tol,
        "max-score": lambda: s > cfg.max_score + tol,
        "min-score": lambda: s < cfg.min_score - tol,
    }
    return [rule for rule in cfg.rules if checks[rule]()]


@SETTINGS
@given(table=scored_tables(), cfg=filter_configs())
def test_filter_never_drops_a_positive_and_keeps_no_negative_beyond_the_bound(table, cfg):
    out = pl.from_arrow(filter_table(table, cfg))
    assert out.select(schemas.SCORED.names).equals(pl.from_arrow(table))  # same rows, same order
    positives = out.filter(pl.col("is_positive"))
    assert positives["keep"].all() and positives["reason"].is_null().all()
    ref = reference(out, cfg.positive_reference)
    kept = out.filter(pl.col("keep") & ~pl.col("is_positive"))
    for q, s in kept.select("query_id", "teacher_score").iter_rows():
        assert not violated(cfg, s, ref[q]), (q, s, ref[q])
    if cfg.negatives_per_query:
        assert (kept.group_by("query_id").len()["len"] <= cfg.negatives_per_query).all()
    assert (out["keep"] == out["reason"].is_null()).all()


@SETTINGS
@given(table=scored_tables(), cfg=filter_configs(), relabel=st.builds(
    RelabelConfig, promote=st.booleans(), positive_reference=st.sampled_from(POSITIVE_REFERENCES),
    threshold=st.one_of(st.none(), scores), max_promoted_per_query=st.integers(0, 3)))
def test_relabel_never_makes_a_labeled_positive_anything_else(table, cfg, relabel):
    out = pl.from_arrow(relabel_table(filter_table(table, cfg), relabel))
    positives = out.filter(pl.col("is_positive"))
    assert (positives["label"] == "positive").all() and (positives["label_source"] == "qrels").all()
    negatives = out.filter(pl.col("label") == "negative")
    assert not negatives["is_positive"].any() and negatives["keep"].all()
    assert (out.filter(pl.col("label_source") == "teacher").group_by("query_id").len()["len"]
            <= relabel.max_promoted_per_query).all()


@SETTINGS
@given(table=scored_tables(), cfg=filter_configs())
def test_filtering_is_idempotent_on_the_kept_rows(table, cfg):
    first = filter_table(table, cfg)
    kept = first.filter(first["keep"]).select(schemas.SCORED.names)
    again = filter_table(kept, cfg)
    assert again["keep"].to_pylist() == [True] * kept.num_rows, again.filter(pa.compute.invert(again["keep"]))


def split_by_query(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    qids = list(dict.fromkeys(table["query_id"].to_pylist()))
    groups = np.split(np.array(qids, dtype=object), sorted({c % (len(qids) + 1) for c in cuts}))
    return [table.filter(pa.compute.is_in(table["query_id"], pa.array(list(g), pa.string()))) for g in groups if len(g)]


@SETTINGS
@given(table=scored_tables(), cfg=filter_configs(), cuts=st.lists(st.integers(0, 10), max_size=4),
       relabel=st.builds(RelabelConfig, max_promoted_per_query=st.integers(0, 3)))
def test_filter_and_relabel_give_the_same_rows_however_queries_are_split_into_parts(table, cfg, cuts, relabel):
    whole = filter_table(table, cfg)
    parts = [filter_table(p, cfg) for p in split_by_query(table, cuts)]
    assert pa.concat_tables(parts).equals(whole)
    assert pa.concat_tables([relabel_table(p, relabel) for p in parts]).equals(relabel_table(whole, relabel))


# -- mine ------------------------------------------------------------------------------------------------------------
def test_mine_gives_the_same_rows_for_any_query_batch_size(tmp_path, data_dir, index_dirs):
    tables = {}
    for retriever in ("bm25", "dense"):
        for size in (1, 3, 256):
            out = tmp_path / f"{retriever}-{size}"
            invoke("mine", index_dirs[retriever], "--data", data_dir, "--out", out, "--top-k", "6",
                   "--query-batch-size", str(size))
            tables[retriever, size] = read_stage(out, "mine", schemas.MINED)
        assert len(list((tmp_path / f"{retriever}-1").glob("part-*"))) > 1
    for size in (3, 256):
        assert tables["bm25", size].equals(tables["bm25", 1])
        dense, one = tables["dense", size], tables["dense", 1]
        # dense: the same candidates and ranks; scores may differ in the last float bits with the batch's padding
        assert dense.drop_columns(["retriever_score"]).equals(one.drop_columns(["retriever_score"]))
        a, b = (np.asarray(t["retriever_score"].fill_null(0)) for t in (dense, one))
        assert np.abs(a - b).max() < 1e-5
