import numpy as np
import polars as pl

from conftest import clear_negatives, invoke, read_tiny
from hardneg import schemas
from hardneg.io.stagedir import read_manifest, read_stage


def test_every_mined_row_gets_a_teacher_score(scored_dir, mined_dir):
    scored = read_stage(scored_dir, "score", schemas.SCORED)
    mined = read_stage(mined_dir, "mine", schemas.MINED)
    assert scored.num_rows == mined.num_rows
    assert scored.select(schemas.MINED.names).equals(mined)
    s = np.asarray(scored["teacher_score"])
    assert np.isfinite(s).all() and (s <= 1.0001).all() and (s >= -1.0001).all()  # cosine
    m = read_manifest(scored_dir)
    assert m["summary"]["activation"] == "cosine" and m["models"]["teacher"] == "all-MiniLM-L6-v2"


def test_the_duplicate_of_a_positive_scores_like_the_positive(scored_dir, dup_id):
    df = pl.from_arrow(read_stage(scored_dir, "score", schemas.SCORED))
    q, dup = dup_id
    pos_score = df.filter((pl.col("query_id") == q) & pl.col("is_positive"))["teacher_score"][0]
    dup_score = df.filter((pl.col("query_id") == q) & (pl.col("doc_id") == dup))["teacher_score"][0]
    assert abs(pos_score - dup_score) < 1e-4


def test_cross_encoder_teacher_ranks_positives_above_clear_negatives(tmp_path, mined_dir, data_dir, trained_cross_encoder):
    from hardneg.config import ScoreConfig
    from hardneg.teachers import load_teacher

    corpus, queries, qrels = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    teacher = load_teacher(ScoreConfig(model=str(trained_cross_encoder), teacher_kind="cross-encoder"))
    n = len(qrels)
    pairs = [(qtext[q], docs[d]) for q, d, _ in qrels]  # held-in positives
    clear = [(qtext[q], docs[d]) for q, d in clear_negatives(3)]  # held-in, nobody's positive
    pos = teacher.score(*map(list, zip(*pairs)))
    neg = teacher.score(*map(list, zip(*clear))).reshape(n, 3)
    wins = int((pos > neg.max(axis=1)).sum())
    assert wins >= 0.75 * n, f"positive above clear negatives for only {wins}/{n} queries"

    invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--teacher", trained_cross_encoder,
           "--teacher-kind", "cross-encoder")
    manifest = read_manifest(tmp_path / "s")
    assert manifest["summary"]["activation"] == "none (raw logits)"
    assert manifest["process_peak_rss_mib"] > 100  # this process holds torch and a cross-encoder
    df = pl.from_arrow(read_stage(tmp_path / "s", "score", schemas.SCORED))
    assert df["teacher_score"].is_not_null().all()
    # raw logits, not sigmoid probabilities: a trained head gives values outside [0, 1]
    assert (df["teacher_score"] < 0).any() or (df["teacher_score"] > 1).any()


def test_a_missing_model_is_a_clear_error_not_a_hub_timeout(tmp_path, mined_dir, data_dir):
    import time

    for teacher, expected in (("/no/such/model", "does not exist"), ("some-org/not-cached-model", "--allow-download")):
        t0 = time.time()
        result = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--teacher", teacher, ok=False)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert time.time() - t0 < 10
        assert not (tmp_path / "s").exists()


# -- the teacher is the index's encoder: its embeddings are read, no model is loaded ---------------------------------

def _no_model(monkeypatch):
    """Make loading a sentence-transformers model fail loudly (in the teacher and in the dense retriever)."""
    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded")

    import hardneg.retrievers.dense as dense
    import hardneg.teachers.bi_encoder as bi

    monkeypatch.setattr(bi, "load_sentence_transformer", fail)
    monkeypatch.setattr(dense, "load_sentence_transformer", fail)


def _fresh_scores(df: pl.DataFrame, **cfg) -> np.ndarray:
    """The same pairs scored by a bi-encoder teacher that encodes every text itself (no index, no cache)."""
    from hardneg.config import ScoreConfig
    from hardneg.teachers.bi_encoder import BiEncoderTeacher

    corpus, queries, _ = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    teacher = BiEncoderTeacher(ScoreConfig(**cfg))
    return teacher.score([qtext[q] for q in df["query_id"]], [docs[d] for d in df["doc_id"]])


def test_a_teacher_that_is_the_index_encoder_reads_its_embeddings_and_loads_no_model(tmp_path, monkeypatch,
                                                                                    mined_dir, data_dir):
    _no_model(monkeypatch)
    # the shipped default writes max_seq_length = 256 for the teacher, the index leaves it unset (= MiniLM's 256)
    for args in ([], ["--max-seq-length", "256"]):
        out = tmp_path / f"s{len(args)}"
        invoke("score", mined_dir, "--data", data_dir, "--out", out, *args)
        s = read_manifest(out)["summary"]
        assert s["embeddings_from_index"] and s["texts_encoded"] == 0 and s["embeddings_reused"] > 0, s
        assert not (out / ".hardneg-cache").exists()  # nothing to cache
    df = pl.from_arrow(read_stage(out, "score", schemas.SCORED))
    monkeypatch.undo()
    fresh = _fresh_scores(df, max_seq_length=256)
    assert np.abs(df["teacher_score"].to_numpy() - fresh).max() < 1e-5


def test_another_encoder_identity_does_not_read_the_index(tmp_path, monkeypatch, mined_dir, data_dir):
    _no_model(monkeypatch)
    for n, args in enumerate((["--max-seq-length", "128"], ["--query-prompt", "query: "])):
        result = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / f"x{n}", *args, ok=False)
        assert "a model was loaded" in repr(result.exception), args
    monkeypatch.undo()
    invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--max-seq-length", "128")
    s = read_manifest(tmp_path / "s")["summary"]
    assert not s["embeddings_from_index"] and s["texts_encoded"] > 0
    df = pl.from_arrow(read_stage(tmp_path / "s", "score", schemas.SCORED))
    assert np.abs(df["teacher_score"].to_numpy() - _fresh_scores(df, max_seq_length=128)).max() < 1e-5


def test_a_gone_or_changed_index_falls_back_to_encoding(tmp_path, data_dir):
    import shutil

    invoke("index", data_dir, "--out", tmp_path / "index", "--retriever", "dense")
    invoke("mine", tmp_path / "index", "--data", data_dir, "--out", tmp_path / "mined", "--top-k", "5")
    invoke("score", tmp_path / "mined", "--data", data_dir, "--out", tmp_path / "a")
    assert read_manifest(tmp_path / "a")["summary"]["embeddings_from_index"]
    shutil.rmtree(tmp_path / "index")
    invoke("score", tmp_path / "mined", "--data", data_dir, "--out", tmp_path / "b")
    s = read_manifest(tmp_path / "b")["summary"]
    assert not s["embeddings_from_index"] and s["texts_encoded"] > 0
    a, b = (pl.from_arrow(read_stage(tmp_path / x, "score", schemas.SCORED)) for x in "ab")
    assert np.abs(a["teacher_score"].to_numpy() - b["teacher_score"].to_numpy()).max() < 1e-5


# -- adaptive depth ----------------------------------------------------------------------------------------------

ADAPTIVE = """
[index]
retriever = "bm25"
[mine]
top_k = 20
[score]
first_window = 2
{score}
[filter]
rules = ["near-duplicate", "perc-pos"]
negatives_per_query = 2
[relabel]
{relabel}
"""


def _run(tmp_path, data_dir, name, score="", relabel='policy = "drop"'):
    (tmp_path / f"{name}.toml").write_text(ADAPTIVE.format(score=score, relabel=relabel))
    invoke("run", data_dir, "--out", tmp_path / name, "--config", tmp_path / f"{name}.toml")
    return tmp_path / name


def test_adaptive_depth_scores_fewer_pairs_for_the_same_training_file(tmp_path, data_dir):
    adaptive = _run(tmp_path, data_dir, "adaptive")
    full = _run(tmp_path, data_dir, "full", score='depth = "full"')
    assert (adaptive / "train.parquet").read_bytes() == (full / "train.parquet").read_bytes()
    a, f = (read_manifest(d / "scored")["summary"] for d in (adaptive, full))
    assert a["depth"] == "adaptive" and f["depth"].startswith("full")
    assert a["pairs_skipped_by_depth"] > 0 and f["pairs_skipped_by_depth"] == 0
    assert a["scored_pairs"] + a["pairs_skipped_by_depth"] == f["scored_pairs"] == a["distinct_pairs"]
    assert a["texts_encoded"] < f["texts_encoded"]
    text = invoke("summary", adaptive).output  # the saving is visible
    assert (f"{a['scored_pairs']} scored, 0 from the cache, {a['pairs_skipped_by_depth']} skipped by depth; "
            f"{a['texts_encoded']} texts encoded" in text), text
    # unscored rows are marked, and the filter keeps exactly the same rows
    fa, ff = (pl.from_arrow(read_stage(d / "filtered", "filter", schemas.FILTERED)) for d in (adaptive, full))
    unscored = fa.filter(pl.col("teacher_score").is_null())
    assert unscored.height == a["pairs_skipped_by_depth"] and not unscored["is_positive"].any()
    assert set(unscored["reason"]) == {"not_scored"}
    kept = [d.filter(pl.col("keep")).select("query_id", "doc_id", "teacher_score").sort("query_id", "doc_id")
            for d in (fa, ff)]
    assert kept[0].equals(kept[1])
    # the caches stay inside the run directory
    assert any((adaptive / ".hardneg-cache").glob("*/emb-*.npy"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adaptive", "adaptive.toml", "full", "full.toml"]


def test_auto_depth_scores_the_whole_pool_when_relabel_may_promote_any_candidate(tmp_path, data_dir):
    run = _run(tmp_path, data_dir, "promote", relabel='policy = "relabel"')
    s = read_manifest(run / "scored")["summary"]
    assert s["depth"].startswith("full: relabel promotes") and s["pairs_skipped_by_depth"] == 0
    forced = _run(tmp_path, data_dir, "forced", score='depth = "adaptive"', relabel='policy = "relabel"')
    s = read_manifest(forced / "scored")["summary"]
    assert s["depth"].startswith("adaptive: promotions") and s["pairs_skipped_by_depth"] > 0


def test_a_cross_encoder_scores_adaptively_with_the_filter_config(tmp_path, index_dirs, data_dir,
                                                                    trained_cross_encoder):
    (tmp_path / "cfg.toml").write_text(ADAPTIVE.format(score="", relabel='policy = "drop"'))
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", 20)
    ce = ("--teacher", trained_cross_encoder, "--teacher-kind", "cross-encoder", "--first-window", 2)
    invoke("score", tmp_path / "m", "--data", data_dir, "--out", tmp_path / "a", *ce, "--filter-config",
           tmp_path / "cfg.toml", "--cache", tmp_path / "cache")
    invoke("score", tmp_path / "m", "--data", data_dir, "--out", tmp_path / "f", *ce, "--no-cache")
    a, f = (read_manifest(tmp_path / x)["summary"] for x in "af")
    assert a["depth"] == "adaptive" and 0 < a["scored_pairs"] < f["scored_pairs"] == a["distinct_pairs"]
    assert read_manifest(tmp_path / "a")["config"]["depth_rules"]["negatives_per_query"] == 2
    kept = []
    for x in "af":
        invoke("filter", tmp_path / x, "--out", tmp_path / f"{x}-filtered", "--rule", "near-duplicate", "--rule",
               "perc-pos", "--negatives-per-query", 2)
        df = pl.from_arrow(read_stage(tmp_path / f"{x}-filtered", "filter", schemas.FILTERED))
        kept.append(df.filter(pl.col("keep")).select("query_id", "doc_id", "teacher_score").sort("query_id", "doc_id"))
    assert kept[0].equals(kept[1])
    # a rerun scores nothing: the pairs it scored are in the score cache
    invoke("score", tmp_path / "m", "--data", data_dir, "--out", tmp_path / "again", *ce, "--filter-config",
           tmp_path / "cfg.toml", "--cache", tmp_path / "cache")
    again = read_manifest(tmp_path / "again")["summary"]
    assert again["scored_pairs"] == 0 and again["cached_pairs"] == a["scored_pairs"]
