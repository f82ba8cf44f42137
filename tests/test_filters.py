import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from conftest import invoke, scored
from hardneg import schemas
from hardneg.config import FilterConfig, RelabelConfig
from hardneg.errors import HardnegError
from hardneg.io.data import text_keys_by_id
from hardneg.io.stagedir import read_manifest, read_stage
from hardneg.stages.filter import near_duplicates
from hardneg.stages.filter import filter_table as _filter_table
from hardneg.stages.relabel import relabel_table


def filter_table(table, cfg, duplicate=None):
    from hardneg.config import validate

    return _filter_table(table, validate(cfg), duplicate)


def reasons(table):
    df = pl.from_arrow(table)
    return dict(zip(df["doc_id"], df["reason"]))


DEEP = [("q", "p", None, True, 0.9)] + [("q", f"n{r}", r, False, s) for r, s in
                                         [(1, 0.95), (2, 0.5), (3, 0.4), (4, 0.3), (5, 0.88), (6, 0.2), (7, 0.1)]]


def test_rank_window_drops_outside_and_reports_it():
    got = reasons(filter_table(scored(DEEP), FilterConfig(rules=["rank-window"], rank_min=1, rank_max=4,
                                                          negatives_per_query=0)))
    assert got == {"p": None, "n1": "outside_rank_window", "n2": None, "n3": None, "n4": None,
                   "n5": "outside_rank_window", "n6": "outside_rank_window", "n7": "outside_rank_window"}


def test_short_policies_keep_drop_and_pad():
    base = dict(rules=["perc-pos", "rank-window"], rank_max=3, negatives_per_query=4)
    # perc-pos bound 0.9 * 0.95 = 0.855: n1 (0.95) and n5 (0.88) are suspects; window keeps ranks <= 3 -> n2, n3
    keep = reasons(filter_table(scored(DEEP), FilterConfig(**base)))
    assert [d for d, r in keep.items() if r is None and d != "p"] == ["n2", "n3"]
    drop = reasons(filter_table(scored(DEEP), FilterConfig(**base, short_policy="drop")))
    assert drop["n2"] == drop["n3"] == "too_few_negatives" and drop["p"] is None
    pad = reasons(filter_table(scored(DEEP), FilterConfig(**base, short_policy="pad")))
    # padded from below rank 3, nearest first, never with a candidate a score rule dropped (n5)
    assert [d for d, r in pad.items() if r is None and d != "p"] == ["n2", "n3", "n4", "n6"]
    assert pad["n5"] == "perc_pos" and pad["n7"] == "outside_rank_window" and pad["n1"] == "perc_pos"
    with pytest.raises(HardnegError, match="rank_max"):
        filter_table(scored(DEEP), FilterConfig(short_policy="pad"))


def test_near_duplicates_by_normalized_text_and_by_cosine():
    table = scored([("q", "p", None, True, 0.9), ("q", "same", 1, False, 0.1), ("q", "close", 2, False, 0.1),
                    ("q", "far", 3, False, 0.1), ("r", "p2", None, True, 0.9), ("r", "same", 1, False, 0.1)])
    corpus = pa.table({"doc_id": ["p", "same", "close", "far", "p2"], "title": ["Vitamin D,", "", "", "", ""],
                       "text": ["and bones!", "vitamin  d and BONES", "vitamin d and teeth", "cats", "dogs"]})
    norm = text_keys_by_id(corpus)
    assert norm["p"] == norm["same"] and len(set(norm.values())) == 4
    assert near_duplicates(table, norm, None, None) == [False, True, False, False, False, False]

    class Emb:
        emb = np.array([[1, 0], [1, 0], [0.96, 0.28], [0, 1], [0, 1]], dtype=np.float32)

        def rows_of(self, ids):
            return np.array([["p", "same", "close", "far", "p2"].index(d) for d in ids])

    assert near_duplicates(table, norm, 0.95, Emb()) == [False, True, True, False, False, False]
    got = filter_table(table, FilterConfig(rules=["near-duplicate"], dup_threshold=0.95, negatives_per_query=0),
                       [False, True, True, False, False, False])
    assert got["reason"].to_pylist() == [None, "near_duplicate_of_positive", "near_duplicate_of_positive", None,
                                         None, None]


def test_filter_cli_near_duplicate_uses_the_index_embeddings_and_writes_dropped_rows(tmp_path, scored_dir, dup_id):
    out, side = tmp_path / "f", tmp_path / "dropped"
    invoke("filter", scored_dir, "--out", out, "--rule", "near-duplicate", "--rule", "perc-pos",
           "--dup-threshold", "0.97", "--negatives-per-query", "3", "--dropped-out", side)
    df = pl.from_arrow(read_stage(out, "filter", schemas.FILTERED))
    q, dup = dup_id
    assert df.filter((pl.col("query_id") == q) & (pl.col("doc_id") == dup))["reason"].to_list() == [
        "near_duplicate_of_positive"]
    summary = read_manifest(out)["summary"]
    assert summary["dup_embeddings"].startswith("index:")  # the hybrid index `mine` used has dense embeddings
    assert summary["negatives_kept"] == int((df["keep"] & ~df["is_positive"]).sum())
    per_query = df.filter(~pl.col("is_positive")).group_by("query_id").agg(pl.col("keep").sum())
    assert summary["queries_short"] == per_query.filter(pl.col("keep") < 3).height
    dropped = pl.from_arrow(read_stage(side, "filter-dropped", schemas.FILTERED))
    assert dropped.height == int((~df["keep"]).sum()) and dropped["reason"].is_not_null().all()
    assert set(dropped["reason"]) <= set(schemas.DROP_REASONS)


def test_filter_cli_near_duplicate_index_choice(tmp_path, scored_dir, index_dirs, dup_id):
    bad = invoke("filter", scored_dir, "--out", tmp_path / "x", "--dup-threshold", "0.97", "--index",
                 index_dirs["bm25"], ok=False)
    assert bad.exit_code == 2 and "no dense embeddings" in bad.output
    out = tmp_path / "f"
    invoke("filter", scored_dir, "--out", out, "--rule", "near-duplicate", "--dup-threshold", "0.999",
           "--negatives-per-query", "0", "--index", index_dirs["dense"], "--dup-model", "all-MiniLM-L6-v2")
    assert read_manifest(out)["summary"]["dup_embeddings"].startswith("index:")


def test_near_duplicate_embeddings_fall_back_to_the_model_without_a_dense_index(data_dir, index_dirs):
    """No index: DocEmbeddings encodes the documents asked for with dup_model, each once, and gets the index's
    own embeddings (same model and texts)."""
    import pyarrow.parquet as pq

    from hardneg.io import data
    from hardneg.stages.filter import DocEmbeddings

    corpus = data.load(data_dir)["corpus"]
    doc_text = dict(zip(corpus["doc_id"].to_pylist(), data.document_texts(corpus)))
    ids = sorted(doc_text)[:5]
    emb = DocEmbeddings(None, "all-MiniLM-L6-v2", doc_text, "")
    rows = emb.rows_of(ids + ids[:2])
    assert emb.source == "model:all-MiniLM-L6-v2" and emb.emb.shape[0] == 5  # each document encoded once
    index = index_dirs["dense"]
    order = {d: i for i, d in enumerate(pq.read_table(index / "doc_ids.parquet")["doc_id"].to_pylist())}
    expected = np.load(index / "dense" / "embeddings.npy")[[order[d] for d in ids + ids[:2]]]
    np.testing.assert_allclose(np.asarray(emb.emb)[rows], expected, atol=1e-4)


ROWS = [("q", "p1", 3, True, 0.80), ("q", "p2", None, True, 0.60), ("q", "a", 1, False, 0.90),
        ("q", "b", 2, False, 0.85), ("q", "c", 4, False, 0.50), ("q", "d", 5, False, 0.20)]


def labels(policy, rules=("perc-pos",), duplicate=None, **kw):
    filtered = filter_table(scored(ROWS), FilterConfig(rules=list(rules), negatives_per_query=0), duplicate)
    df = pl.from_arrow(relabel_table(filtered, RelabelConfig(policy=policy, **kw)))
    return {d: (lab, src) for d, lab, src in df.select("doc_id", "label", "label_source").iter_rows()}


def test_relabel_policies():
    # suspects: a (0.90) and b (0.85) reach the best positive (0.80)
    assert labels("relabel") == {"p1": ("positive", "qrels"), "p2": ("positive", "qrels"),
                                 "a": ("positive", "teacher"), "b": ("positive", "teacher"),
                                 "c": ("negative", "rule"), "d": ("negative", "rule")}
    capped = labels("relabel", max_promoted_per_query=1)
    assert capped["a"] == ("positive", "teacher") and capped["b"] == ("dropped", "rule")
    flagged = labels("keep-flagged")
    assert flagged["a"] == flagged["b"] == ("flagged", "teacher") and flagged["c"] == ("negative", "rule")
    assert labels("drop")["a"] == labels("drop")["b"] == ("dropped", "rule")
    # the filter's rules decide what is safe: a negative it kept is never a suspect, whatever policy (no score rule
    # compares with the positive here, so a and b stay negatives; d is dropped by min-score)
    for policy in ("drop", "relabel", "keep-flagged"):
        filtered = filter_table(scored(ROWS), FilterConfig(rules=["min-score"], min_score=0.3, negatives_per_query=0))
        got = dict(zip(*pl.from_arrow(relabel_table(filtered, RelabelConfig(policy=policy)))
                       .select("doc_id", "label").to_dict().values()))
        assert got["a"] == got["b"] == got["c"] == "negative" and got["d"] == "dropped", policy
    # a near-duplicate of a positive is a suspect by rule, whatever its score
    dup = labels("relabel", rules=("near-duplicate", "perc-pos"),
                 duplicate=[False, False, False, False, False, True], threshold=None)
    assert dup["d"] == ("positive", "rule")


def test_relabel_cli_keep_flagged_and_export_leaves_flagged_out(tmp_path, filtered_dir, data_dir):
    out = tmp_path / "r"
    invoke("relabel", filtered_dir, "--out", out, "--policy", "keep-flagged", "--threshold", "0.6")
    df = pl.from_arrow(read_stage(out, "relabel", schemas.RELABELED))
    flagged = df.filter(pl.col("label") == "flagged")
    best = df.filter(pl.col("is_positive")).group_by("query_id").agg(pl.col("teacher_score").max().alias("best"))
    flagged = flagged.join(best, on="query_id")
    assert flagged.height > 0 and ((flagged["teacher_score"] >= 0.6) | (flagged["teacher_score"] >= flagged["best"])).all()
    assert (df.filter(pl.col("is_positive"))["label"] == "positive").all()
    assert read_manifest(out)["summary"]["policy"] == "keep-flagged"
    invoke("export", out, "--data", data_dir, "--out", tmp_path / "t.parquet", "--format", "labeled")
    exported = pl.read_parquet(tmp_path / "t.parquet")
    assert exported.height == df.filter(pl.col("label").is_in(["positive", "negative"])).height
