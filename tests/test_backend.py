"""Encoder backends: onnxruntime (`--backend onnx | onnx-int8`) against torch on the tiny collection, the export
cache, the embedding-cache params, the teacher identity, and the errors."""

import json
import sys

import numpy as np
import polars as pl
import pytest

from conftest import invoke
from hardneg import schemas
from hardneg.io.stagedir import read_stage


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """One ONNX export cache for the session (exported once, by the first test that needs it)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def onnx_env(models_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("HARDNEG_MODELS", str(models_dir))
    return models_dir


@pytest.fixture(scope="session")
def onnx_indexes(tmp_path_factory, data_dir, models_dir):
    """Dense indexes of the tiny collection built with each ONNX backend (the torch one is index_dirs['dense'])."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    mp = pytest.MonkeyPatch()
    mp.setenv("HARDNEG_MODELS", str(models_dir))
    out = {}
    try:
        for backend in ("onnx", "onnx-int8"):
            out[backend] = tmp_path_factory.mktemp("idx") / backend
            invoke("index", data_dir, "--out", out[backend], "--retriever", "dense", "--backend", backend)
    finally:
        mp.undo()
    return out


def embeddings(index_dir):
    return np.load(index_dir / "dense" / "embeddings.npy")


def top_sets(mined_path, k):
    df = pl.from_arrow(read_stage(mined_path, "mine", schemas.MINED))
    got = df.filter(pl.col("rank").is_not_null() & (pl.col("rank") <= k))
    return {q: set(g["doc_id"]) for (q,), g in got.group_by("query_id")}


def test_onnx_embeddings_match_torch_and_mine_the_same_top_10(tmp_path, onnx_env, onnx_indexes, index_dirs, data_dir):
    torch_emb, onnx_emb = embeddings(index_dirs["dense"]), embeddings(onnx_indexes["onnx"])
    assert onnx_emb.shape == torch_emb.shape
    assert np.abs(onnx_emb - torch_emb).max() < 1e-5
    for name, index in (("torch", index_dirs["dense"]), ("onnx", onnx_indexes["onnx"])):
        invoke("mine", index, "--data", data_dir, "--out", tmp_path / name, "--top-k", 10)
    assert top_sets(tmp_path / "onnx", 10) == top_sets(tmp_path / "torch", 10)
    a = pl.from_arrow(read_stage(tmp_path / "onnx", "mine", schemas.MINED))
    b = pl.from_arrow(read_stage(tmp_path / "torch", "mine", schemas.MINED))
    joined = a.join(b, on=["query_id", "doc_id"])
    assert joined.height == a.height == b.height
    assert (joined["retriever_score"] - joined["retriever_score_right"]).abs().max() < 1e-5


def test_int8_embeddings_are_close_but_not_equal(onnx_env, onnx_indexes, index_dirs):
    torch_emb, int8 = embeddings(index_dirs["dense"]), embeddings(onnx_indexes["onnx-int8"])
    cosine = (torch_emb * int8).sum(axis=1)
    assert cosine.min() > 0.97  # approximate ...
    assert np.abs(int8 - torch_emb).max() > 1e-4  # ... and really another graph than the float32 one


def test_params_json_and_manifest_record_the_backend(onnx_env, onnx_indexes, index_dirs):
    for backend, index in (("torch", index_dirs["dense"]), *onnx_indexes.items()):
        params = json.loads((index / "dense" / "params.json").read_text())
        assert params["backend"] == backend
        assert json.loads((index / "_manifest.json").read_text())["config"]["backend"] == backend


def test_a_second_run_reuses_the_exported_graph(tmp_path, onnx_env, onnx_indexes, data_dir):
    from hardneg import onnx_backend

    graphs = sorted(onnx_env.glob("onnx/*/*.onnx"))
    assert [g.name for g in graphs] == ["model-int8.onnx", "model.onnx"]  # one model, both graphs, in the cache
    mtimes = [g.stat().st_mtime_ns for g in graphs]
    exports = onnx_backend.exports
    for backend in ("onnx", "onnx-int8"):
        invoke("index", data_dir, "--out", tmp_path / backend, "--retriever", "dense", "--backend", backend)
        np.testing.assert_array_equal(embeddings(tmp_path / backend), embeddings(onnx_indexes[backend]))
    assert onnx_backend.exports == exports
    assert [g.stat().st_mtime_ns for g in sorted(onnx_env.glob("onnx/*/*.onnx"))] == mtimes


def test_onnx_bi_encoder_teacher_scores_like_torch_under_its_own_cache_identity(tmp_path, onnx_env, mined_dir,
                                                                               data_dir, scored_dir):
    cache = tmp_path / "cache"
    invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--backend", "onnx", "--cache", cache)
    got = pl.from_arrow(read_stage(tmp_path / "s", "score", schemas.SCORED))
    ref = pl.from_arrow(read_stage(scored_dir, "score", schemas.SCORED))
    joined = got.join(ref, on=["query_id", "doc_id"])
    assert joined.height == got.height == ref.height
    assert (joined["teacher_score"] - joined["teacher_score_right"]).abs().max() < 1e-5
    identities = [json.loads(p.read_text()) for p in cache.glob("*/encoder.json")]  # the embedding cache
    assert [i.get("backend") for i in identities] == ["onnx"]


def test_teacher_identity_names_a_non_torch_backend_only():
    from hardneg.config import ScoreConfig
    from hardneg.stages.score import teacher_identity

    torch_id = teacher_identity(ScoreConfig())
    assert "backend" not in torch_id  # caches written before backends existed stay valid
    assert teacher_identity(ScoreConfig(backend="onnx")) == {**torch_id, "backend": "onnx"}


def test_a_missing_onnx_extra_is_a_one_line_error(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    result = invoke("index", data_dir, "--out", tmp_path / "i", "--retriever", "dense", "--backend", "onnx", ok=False)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "pip install 'hardneg[onnx]'" in result.output
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "runs on CPU"),
    (["--teacher-kind", "cross-encoder"], "is for bi-encoders"),
])
def test_onnx_backend_refuses_what_it_cannot_run(tmp_path, mined_dir, data_dir, args, message):
    result = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--backend", "onnx", *args,
                    ok=False)
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "s").exists()
