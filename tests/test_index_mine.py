import pyarrow.parquet as pq
import polars as pl

from conftest import invoke, read_tiny
from hardneg import schemas
from hardneg.io.stagedir import read_stage


def test_bm25s_and_rank_bm25_agree_on_the_top_10(tmp_path, data_dir):
    from hardneg.config import IndexConfig
    from hardneg.io import data
    from hardneg.retrievers.bm25 import Bm25s, RankBm25

    tables = data.load(data_dir)
    texts = data.document_texts(tables["corpus"])
    queries = tables["queries"]["text"].to_pylist()
    cfg = IndexConfig()
    runs = {}
    for cls in (Bm25s, RankBm25):
        d = tmp_path / cls.name
        d.mkdir()
        cls.build(texts, d, cfg)
        runs[cls.name] = cls(d, cfg).search(queries, 10)[0]
    for a, b in zip(runs["bm25"], runs["rank-bm25"]):
        assert set(a[a >= 0][:10]) == set(b[b >= 0][:10])


def test_index_directories_have_their_artifacts(index_dirs):
    assert (index_dirs["bm25"] / "bm25s").is_dir()
    emb = index_dirs["dense"] / "dense" / "embeddings.npy"
    assert emb.exists() and (index_dirs["dense"] / "dense" / "params.json").exists()
    for d in index_dirs.values():
        assert (d / "_SUCCESS").exists() and (d / "doc_ids.parquet").exists()


def test_mined_rows_mark_every_positive_and_have_the_documented_columns(mined_dir):
    table = read_stage(mined_dir, "mine", schemas.MINED)
    assert pq.read_table(next(mined_dir.glob("part-*.parquet"))).schema.equals(schemas.MINED)
    df = pl.from_arrow(table)
    _, _, qrels = read_tiny()
    labeled = {(q, d) for q, d, _ in qrels}
    got_pos = set(df.filter(pl.col("is_positive")).select("query_id", "doc_id").iter_rows())
    assert got_pos == labeled  # every labeled positive is a positive row, retrieved or not
    assert not any((q, d) in labeled for q, d in df.filter(~pl.col("is_positive")).select("query_id", "doc_id").iter_rows())
    retrieved = df.filter(pl.col("rank").is_not_null())
    assert retrieved.group_by("query_id").len()["len"].max() <= 10
    assert set(retrieved["retriever"].unique()) <= {"bm25", "dense", "bm25+dense"}
    missed = df.filter(pl.col("rank").is_null())
    assert missed["is_positive"].all() and set(missed["retriever"]) <= {"qrels"}
    assert df.select("query_id", "doc_id").is_unique().all()


def test_a_positive_the_retriever_misses_is_still_a_positive_row(tmp_path, data_dir, index_dirs):
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", "1")
    df = pl.from_arrow(read_stage(tmp_path / "m", "mine", schemas.MINED))
    _, _, qrels = read_tiny()
    assert df.filter(pl.col("is_positive")).height == len(qrels)
    assert df.filter(pl.col("rank").is_null()).height > 0


def test_mine_refuses_an_unfinished_index(tmp_path, data_dir, index_dirs):
    import shutil

    broken = tmp_path / "index"
    shutil.copytree(index_dirs["bm25"], broken)
    (broken / "_SUCCESS").unlink()
    result = invoke("mine", broken, "--data", data_dir, "--out", tmp_path / "m", ok=False)
    assert result.exit_code == 2 and "_SUCCESS" in result.output
    assert not (tmp_path / "m").exists()


def test_a_finished_output_is_not_overwritten_without_overwrite(tmp_path, data_dir, index_dirs):
    out = tmp_path / "m"
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "3")
    before = (out / "part-00000.parquet").read_bytes()
    result = invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "5", ok=False)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "part-00000.parquet").read_bytes() == before
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "5", "--overwrite")
    assert (out / "part-00000.parquet").read_bytes() != before


def test_an_unfinished_output_of_another_config_is_not_mixed(tmp_path, data_dir, index_dirs):
    out = tmp_path / "m"
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "3")
    (out / "_SUCCESS").unlink()  # as if killed before the end
    result = invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "4", ok=False)
    assert result.exit_code == 2 and "different config" in result.output
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "3")  # same config resumes
    assert (out / "_SUCCESS").exists()
