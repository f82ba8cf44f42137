import json

import polars as pl
import pytest

from conftest import invoke, read_tiny
from hardneg import schemas
from hardneg.io.stagedir import read_stage

CONFIG = """
[index]
retriever = "hybrid"
[mine]
top_k = 10
[filter]
negatives_per_query = 3
"""


def doc_texts():
    corpus, _, _ = read_tiny()
    return {d["_id"]: f"{d['title']} {d['text']}".strip() for d in corpus}


@pytest.mark.parametrize("fmt,ext,columns", [
    ("triplets", "parquet", ["anchor", "positive", "negative"]),
    ("n-tuple", "parquet", None),
    ("labeled", "jsonl", ["query", "document", "label"]),
    ("labeled-list", "parquet", ["query", "documents", "labels"]),
    ("flagembedding", "jsonl", ["query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type"]),
])
def test_export_formats_load_with_datasets(tmp_path, relabeled_dir, data_dir, fmt, ext, columns):
    import datasets

    out = tmp_path / f"train.{ext}"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--format", fmt)
    ds = datasets.load_dataset("parquet" if ext == "parquet" else "json", data_files=str(out), split="train")
    assert ds.num_rows > 0
    if columns:
        assert ds.column_names == columns
    else:
        assert ds.column_names[:2] == ["anchor", "positive"] and ds.column_names[2] == "negative_1"


def test_no_positive_is_ever_exported_as_a_negative(tmp_path, relabeled_dir, data_dir):
    out = tmp_path / "t.parquet"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out)
    rows = pl.read_parquet(out)
    df = pl.from_arrow(read_stage(relabeled_dir, "relabel", schemas.RELABELED))
    texts = doc_texts()
    _, queries, _ = read_tiny()
    qtext = {q["_id"]: q["text"] for q in queries}
    positives = {(qtext[q], texts[d]) for q, d in df.filter(pl.col("label") == "positive").select("query_id", "doc_id").iter_rows()}
    assert rows.height > 0
    assert not any((a, n) in positives for a, n in rows.select("anchor", "negative").iter_rows())
    assert all((a, p) in positives for a, p in rows.select("anchor", "positive").iter_rows())


def test_run_end_to_end_and_rerun_is_up_to_date(tmp_path, tiny_src, dup_id):
    (tmp_path / "cfg.toml").write_text(CONFIG)
    result = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml")
    for line in ("queries", "positives (qrels)", "candidates mined", "negatives kept", "relabeled to positive",
                 "training file"):
        assert line in result.output
    for stage in ("data", "index", "mined", "scored", "filtered", "relabeled"):
        manifest = json.loads((tmp_path / "run" / stage / "_manifest.json").read_text())
        assert (tmp_path / "run" / stage / "_SUCCESS").exists() and manifest["status"] == "finished"
    rows = pl.read_parquet(tmp_path / "run" / "train.parquet")
    q, dup = dup_id
    qtext = {x["_id"]: x["text"] for x in read_tiny()[1]}
    negatives_of_q = set(rows.filter(pl.col("anchor") == qtext[q])["negative"])
    assert negatives_of_q and doc_texts()[dup] not in negatives_of_q  # the known false negative is not a negative
    assert rows.group_by("anchor").agg(pl.col("negative").n_unique())["negative"].max() <= 3
    again = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml")
    assert again.output.count("up to date") == 7
    # a changed filter rebuilds filter and what follows only with --overwrite
    (tmp_path / "cfg.toml").write_text(CONFIG.replace("negatives_per_query = 3", "negatives_per_query = 2"))
    stale = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml", ok=False)
    assert stale.exit_code == 2 and "--overwrite" in stale.output
    rebuilt = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml", "--overwrite")
    assert rebuilt.output.count("up to date") == 4  # import, index, mine, score
    assert pl.read_parquet(tmp_path / "run" / "train.parquet").group_by("anchor").agg(
        pl.col("negative").n_unique())["negative"].max() <= 2


def test_bad_config_is_a_one_line_error(tmp_path, tiny_src):
    (tmp_path / "cfg.toml").write_text("[filter]\nratio = 'high'\n")
    result = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml", ok=False)
    assert result.exit_code == 2 and "ratio" in result.output and "cfg.toml" in result.output
    assert not (tmp_path / "run").exists()
