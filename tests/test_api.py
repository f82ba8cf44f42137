"""The Python API: hardneg.mine_hard_negatives on a datasets.Dataset of pairs, sentence-transformers' keywords, a
resumable work directory, and a training step on what it returns."""

import subprocess
import sys

import pytest

from conftest import read_tiny, train_one_st_step
from hardneg.api import build_config
from hardneg.config import PipelineConfig
from hardneg.errors import HardnegError


def tiny_dataset():
    import datasets

    corpus, queries, qrels = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    ds = datasets.Dataset.from_dict({"anchor": [qtext[q] for q, d, _ in qrels],
                                     "positive": [docs[d] for q, d, _ in qrels]})
    return ds, list(docs.values())


def test_import_hardneg_is_light_and_has_the_api():
    code = ("import sys, hardneg; heavy = [m for m in ('torch', 'datasets', 'sentence_transformers', 'polars') "
            "if m in sys.modules]; print(heavy, callable(hardneg.mine_hard_negatives), hardneg.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "True"


def test_sentence_transformers_keywords_map_to_the_stages():
    cfg = build_config(None, model="m", relative_margin=0.05, absolute_margin=0.1, max_score=0.9, num_negatives=4,
                       range_min=2, range_max=30, sampling_strategy="random", output_format="n-tuple",
                       output_scores=True, query_prompt="query: ", corpus_prompt="passage: ")
    assert cfg.index.retriever == "dense" and cfg.index.model == cfg.score.model == "m"
    assert cfg.filter.rules == ["near-duplicate", "max-score", "margin-pos", "perc-pos"]
    assert cfg.filter.ratio == pytest.approx(0.95) and cfg.filter.margin == 0.1 and cfg.filter.max_score == 0.9
    assert cfg.filter.negatives_per_query == 4 and cfg.filter.sampling == "random"
    assert (cfg.mine.range_min, cfg.mine.top_k) == (2, 30)
    assert cfg.export.format == "n-tuple" and cfg.export.scores
    assert cfg.index.query_prompt == cfg.score.query_prompt == "query: " and cfg.score.doc_prompt == "passage: "
    assert build_config(None, output_format="labeled-pair").export.format == "labeled"
    ce = build_config(PipelineConfig(), cross_encoder="my/ce")
    assert ce.score.teacher_kind == "cross-encoder" and ce.score.model == "my/ce"
    assert ce.index.retriever == PipelineConfig().index.retriever  # a given config is the base, not the API's
    with pytest.raises(HardnegError, match="sampling"):
        build_config(None, sampling_strategy="nope")


def test_mine_hard_negatives_on_a_dataset_trains_one_step_and_resumes(tmp_path, capsys):
    import hardneg

    ds, corpus = tiny_dataset()
    work = tmp_path / "work"
    out = hardneg.mine_hard_negatives(ds, corpus=corpus, relative_margin=0.05, num_negatives=2, work_dir=work)
    assert out.column_names == ["anchor", "positive", "negative"] and out.num_rows >= 4
    pairs = set(zip(ds["anchor"], ds["positive"]))
    assert all((r["anchor"], r["positive"]) in pairs for r in out)
    assert not any((r["anchor"], r["negative"]) in pairs for r in out)
    import pyarrow.parquet as pq

    assert out.to_list() == pq.read_table(work / "train.parquet").to_pylist()  # the same rows as the CLI export
    capsys.readouterr()
    again = hardneg.mine_hard_negatives(ds, corpus=corpus, relative_margin=0.05, num_negatives=2, work_dir=work,
                                        output_format="labeled-pair")
    log = capsys.readouterr().err
    assert "[score] up to date" in log and "[export] ->" in log  # resumed: only the export changed
    assert again.column_names == ["query", "document", "label"]

    train = out.select(range(4))
    train_one_st_step(train, tmp_path / "st")


def test_temporary_work_dir_is_removed_and_bad_input_is_a_hardneg_error(tmp_path, monkeypatch):
    import tempfile

    import hardneg

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(HardnegError, match="no positive column"):
        hardneg.mine_hard_negatives([{"anchor": "q", "other": "p"}], verbose=False)
    with pytest.raises(HardnegError, match="expected a datasets.Dataset"):
        hardneg.mine_hard_negatives(42, verbose=False)
    assert not list(tmp_path.glob("hardneg-*"))


def test_version_and_short_help():
    from conftest import invoke
    from hardneg import __version__

    assert invoke("--version").output.strip() == f"hardneg {__version__}"
    assert "Usage:" in invoke("-h").output and "--pairing" in invoke("export", "-h").output


def test_a_loaded_model_is_saved_once_under_a_digest_of_its_weights(tmp_path):
    from sentence_transformers import SentenceTransformer

    from hardneg.api import _model_path
    from hardneg.models import resolve

    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"), device="cpu")
    a = _model_path(model, tmp_path, "model")
    assert _model_path(model, tmp_path, "model") == a and SentenceTransformer(a, device="cpu")
    import torch

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert _model_path(model, tmp_path, "model") != a
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2
