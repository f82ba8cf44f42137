"""How training rows are formed (export --pairing, --max-rows-per-query), the ST-compatible formats and extras
(labeled for CrossEncoderTrainer, labeled-list, --scores, --with-ids, --save-to-disk), and rows by positive source."""

import json

import polars as pl
import pytest

from conftest import invoke
from hardneg.config import ExportConfig
from hardneg.stages.export import to_format


def grouped_example() -> pl.DataFrame:
    """q1: two labeled positives + one promoted, four negatives; q2: one labeled positive + two promoted, one
    negative; q3: a labeled positive and no negative."""
    return pl.DataFrame({
        "query_id": ["q1", "q2", "q3"],
        "query": ["Q1", "Q2", "Q3"],
        "pos": [["L1a", "L1b", "P1"], ["L2", "P2a", "P2b"], ["L3"]],
        "pos_ids": [["l1a", "l1b", "p1"], ["l2", "p2a", "p2b"], ["l3"]],
        "pos_scores": [[0.9, 0.8, 0.95], [0.7, 0.9, 0.85], [0.5]],
        "pos_src": [["qrels", "qrels", "promoted"], ["qrels", "promoted", "promoted"], ["qrels"]],
        "neg": [["N1", "N2", "N3", "N4"], ["N5"], []],
        "neg_ids": [["n1", "n2", "n3", "n4"], ["n5"], []],
        "neg_scores": [[0.5, 0.4, 0.3, 0.2], [0.1], []],
    }, schema_overrides={"pos_scores": pl.List(pl.Float32), "neg_scores": pl.List(pl.Float32)})


def test_labeled_pairing_uses_each_negative_once_with_labeled_positives_round_robin():
    rows, counts = to_format(grouped_example(), ExportConfig(format="triplets"))
    assert rows.rows() == [("Q1", "L1a", "N1"), ("Q1", "L1b", "N2"), ("Q1", "L1a", "N3"), ("Q1", "L1b", "N4"),
                           ("Q2", "L2", "N5")]
    assert counts["rows_by_positive_source"] == {"qrels": 5, "promoted": 0}
    assert counts["rows_max_per_query"] == 4 and counts["queries_without_negatives"] == 1


def test_all_pairing_is_every_positive_times_every_negative():
    rows, counts = to_format(grouped_example(), ExportConfig(format="triplets", pairing="all"))
    assert rows.height == 3 * 4 + 3 * 1
    assert set(rows.filter(pl.col("anchor") == "Q2")["positive"]) == {"L2", "P2a", "P2b"}
    assert counts["rows_by_positive_source"] == {"qrels": 2 * 4 + 1, "promoted": 4 + 2}


def test_max_rows_per_query_caps_every_query():
    rows, counts = to_format(grouped_example(), ExportConfig(format="triplets", pairing="all", max_rows_per_query=2))
    assert rows.group_by("anchor").len().sort("anchor")["len"].to_list() == [2, 2]
    assert counts["rows"] == 4 and counts["rows_max_per_query"] == 2


def test_n_tuple_pairing_and_scores_like_sentence_transformers():
    g = grouped_example().filter(pl.col("query_id") != "q2")  # q2 has fewer negatives: left out either way
    rows, _ = to_format(g, ExportConfig(format="n-tuple", scores=True, with_ids=True))
    assert rows.columns == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "negative_4", "scores",
                            "query_id", "positive_id", "negative_1_id", "negative_2_id", "negative_3_id",
                            "negative_4_id"]
    assert rows.height == 1 and rows["positive"][0] == "L1a"
    assert rows["scores"][0].to_list() == pytest.approx([0.9, 0.5, 0.4, 0.3, 0.2])
    rows, counts = to_format(g, ExportConfig(format="n-tuple", pairing="all"))
    assert rows["positive"].to_list() == ["L1a", "L1b", "P1"] and counts["rows_by_positive_source"]["promoted"] == 1


def test_triplet_scores_and_ids():
    rows, _ = to_format(grouped_example(), ExportConfig(format="triplets", scores=True, with_ids=True))
    assert rows.columns == ["anchor", "positive", "negative", "scores", "query_id", "positive_id", "negative_id"]
    assert rows.row(1) == ("Q1", "L1b", "N2", pytest.approx([0.8, 0.4]), "q1", "l1b", "n2")


def test_labeled_formats():
    rows, counts = to_format(grouped_example(), ExportConfig(format="labeled"))
    assert rows.columns == ["query", "document", "label"]  # no score column: BinaryCrossEntropyLoss takes it as is
    assert rows.filter(pl.col("label") == 1).height == 7 and rows.filter(pl.col("label") == 0).height == 5
    assert counts["positives_by_source"] == {"qrels": 4, "promoted": 3}
    rows, _ = to_format(grouped_example(), ExportConfig(format="labeled", scores=True, with_ids=True))
    assert rows.columns == ["query", "document", "score", "query_id", "document_id"]
    rows, _ = to_format(grouped_example(), ExportConfig(format="labeled-list"))
    assert rows.columns == ["query", "documents", "labels"] and rows.height == 2
    assert rows.row(1) == ("Q2", ["L2", "P2a", "P2b", "N5"], [1, 1, 1, 0])
    rows, _ = to_format(grouped_example(), ExportConfig(format="labeled-list", scores=True))
    assert rows["scores"][1].to_list() == pytest.approx([0.7, 0.9, 0.85, 0.1])


def test_default_pairing_keeps_promoted_positives_from_multiplying_rows(tmp_path, filtered_dir, data_dir):
    relabeled_dir = tmp_path / "relabeled"  # promotion asked for explicitly, whatever relabel's default is
    invoke("relabel", filtered_dir, "--out", relabeled_dir, "--policy", "relabel")
    out = tmp_path / "t.parquet"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out)
    all_ = tmp_path / "all.parquet"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", all_, "--pairing", "all")
    default = json.loads((tmp_path / "t.parquet.manifest.json").read_text())["summary"]
    every = json.loads((tmp_path / "all.parquet.manifest.json").read_text())["summary"]
    assert default["rows_by_positive_source"]["promoted"] == 0
    assert every["rows_by_positive_source"]["promoted"] > 0  # relabel promoted some: `all` pairs them
    assert default["rows"] == pl.read_parquet(out).height < every["rows"]


def test_summary_prints_training_rows_by_positive_source(tmp_path, tiny_src):
    (tmp_path / "cfg.toml").write_text('[index]\nretriever = "bm25"\n[mine]\ntop_k = 8\n[export]\npairing = "all"\n')
    invoke("run", tiny_src, "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml")
    m = json.loads((tmp_path / "run" / "train.parquet.manifest.json").read_text())["summary"]
    by = m["rows_by_positive_source"]
    assert by["qrels"] + by["promoted"] == m["rows"]
    out = invoke("summary", tmp_path / "run").output
    assert f"rows by positive        {by['qrels']} qrels, {by['promoted']} promoted" in out
    js = json.loads(invoke("summary", tmp_path / "run", "--json").output)
    assert js["training_rows_by_positive_source"] == by


def test_save_to_disk_writes_a_dataset_with_a_card(tmp_path, relabeled_dir, data_dir):
    import datasets

    out = tmp_path / "train.parquet"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--save-to-disk")
    ds = datasets.load_from_disk(str(tmp_path / "train.dataset"))
    assert ds.column_names == ["anchor", "positive", "negative"] and ds.num_rows == pl.read_parquet(out).height
    card = (tmp_path / "train.dataset" / "README.md").read_text()
    assert "format `triplets`, pairing `labeled`" in card and f"| rows | {ds.num_rows} |" in card
    assert "perc_pos" in card and '"teacher_kind": "bi-encoder"' in card and "### filter" in card
    result = invoke("export", relabeled_dir, "--data", data_dir, "--out", tmp_path / "o2.parquet", "--save-to-disk")
    assert result.exit_code == 0
    (tmp_path / "o3.dataset").mkdir()
    result = invoke("export", relabeled_dir, "--data", data_dir, "--out", tmp_path / "o3.parquet", "--save-to-disk",
                    ok=False)
    assert result.exit_code == 2 and "o3.dataset: already exists" in result.output


def test_labeled_export_trains_one_cross_encoder_step(tmp_path, relabeled_dir, data_dir):
    import datasets
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    from hardneg.models import resolve

    out = tmp_path / "labeled.parquet"
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--format", "labeled")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert ds.column_names == ["query", "document", "label"] and set(ds["label"]) == {0, 1}
    ds = ds.shuffle(seed=0).select(range(4))
    torch.manual_seed(0)
    model = CrossEncoder(resolve("all-MiniLM-L6-v2"), num_labels=1, max_length=64, device="cpu")
    before = [p.detach().clone() for p in model.parameters()]
    args = CrossEncoderTrainingArguments(
        output_dir=str(tmp_path / "ce"), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=BinaryCrossEntropyLoss(model))
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
