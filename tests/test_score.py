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
    assert read_manifest(tmp_path / "s")["summary"]["activation"] == "none (raw logits)"
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
