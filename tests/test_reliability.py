"""Kill a stage for real (SIGKILL, in a subprocess) part way, rerun the same command, and check that it resumes from
the finished parts and ends with the same bytes as an uninterrupted run. Also: determinism across whole runs.

The kill point comes from the test hook `HARDNEG_TEST_KILL_AFTER_PARTS=N` (hardneg.io.stagedir): the process
SIGKILLs itself right after writing its N-th part.
"""

import json
import signal
import time
from pathlib import Path

import pytest

from conftest import FAKE, hardneg, invoke
from hardneg import schemas
from hardneg.errors import HardnegError
from hardneg.io.stagedir import read_stage

KILLED = -signal.SIGKILL


def files(d: Path) -> dict[str, bytes]:
    """Every file under `d` but the manifests (they hold paths and wall time), by relative path."""
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.name.endswith("manifest.json")
    }


def summary(d: Path) -> dict:
    return json.loads((d / "_manifest.json").read_text())["summary"]


def parts_stat(d: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(d.glob("part-*.parquet"))}


def kill_then_resume(args, out: Path, kill_after: int) -> dict[str, tuple[int, int]]:
    """Run `args --out out`, SIGKILLed after `kill_after` parts; check what is left; rerun; return the stats of the
    parts that survived the kill (as they were before the rerun)."""
    killed = hardneg(*args, "--out", out, kill_after=kill_after)
    assert killed.returncode == KILLED, killed.stderr
    assert not (out / "_SUCCESS").exists()
    assert json.loads((out / "_manifest.json").read_text())["status"] == "running"
    survived = parts_stat(out)
    assert len(survived) == kill_after
    rerun = hardneg(*args, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "_SUCCESS").exists()
    assert not list(out.glob(".*")), "temporary files left behind"
    return survived


@pytest.fixture(scope="module")
def mined4(tmp_path_factory, data_dir, index_dirs) -> Path:
    """A mined directory of 4 parts (8 queries, 2 per part)."""
    out = tmp_path_factory.mktemp("rel") / "mined4"
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "5", "--query-batch-size", "2")
    assert len(list(out.glob("part-*.parquet"))) == 4
    return out


@pytest.fixture(scope="module")
def scored4(mined4, data_dir) -> Path:
    """mined4 scored by the fake teacher: these tests are about resuming, not about scores."""
    out = mined4.parent / "scored4"
    invoke("score", mined4, "--data", data_dir, "--out", out, *FAKE, "--no-cache")
    return out


def test_mine_killed_mid_stage_resumes_to_the_same_bytes(tmp_path, data_dir, index_dirs):
    """bm25 here; the whole-run test below kills mine on a hybrid (dense + bm25) index."""
    args = ("mine", index_dirs["bm25"], "--data", data_dir, "--top-k", "5", "--query-batch-size", "2")
    full = hardneg(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    survived = kill_then_resume(args, tmp_path / "killed", kill_after=2)
    assert {k: v for k, v in parts_stat(tmp_path / "killed").items() if k in survived} == survived
    assert files(tmp_path / "killed") == files(tmp_path / "full")
    manifest = json.loads((tmp_path / "killed" / "_manifest.json").read_text())
    assert manifest["parts"] == json.loads((tmp_path / "full" / "_manifest.json").read_text())["parts"]
    # the parts the killed run wrote are counted too (recounted from their files), the others from the workers
    assert summary(tmp_path / "killed") == summary(tmp_path / "full")


def test_score_killed_mid_stage_resumes_without_rescoring_finished_parts(tmp_path, mined4, data_dir, scored4):
    from hardneg.models import resolve

    model = tmp_path / "model"
    model.symlink_to(resolve("all-MiniLM-L6-v2"))
    args = ("score", mined4, "--data", data_dir, "--teacher", model, *FAKE, "--no-cache")
    out = tmp_path / "scored"
    killed = hardneg(*args, "--out", out, kill_after=1)
    assert killed.returncode == KILLED and not (out / "_SUCCESS").exists()
    survived = parts_stat(out)
    assert list(survived) == ["part-00000.parquet"]

    # a rerun that fails on bad input (the model is gone) keeps what the killed run finished
    model.unlink()
    failed = hardneg(*args, "--out", out)
    assert failed.returncode == 2 and "does not exist" in failed.stderr and "Traceback" not in failed.stderr
    assert parts_stat(out) == survived

    model.symlink_to(resolve("all-MiniLM-L6-v2"))
    rerun = hardneg(*args, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert {k: v for k, v in parts_stat(out).items() if k in survived} == survived  # not rescored
    assert files(out) == files(scored4)
    assert [summary(out)[k] for k in ("rows", "distinct_pairs")] == [summary(scored4)[k] for k in
                                                                       ("rows", "distinct_pairs")]


@pytest.mark.parametrize("stage", ["filter", "relabel"])
def test_filter_and_relabel_killed_mid_stage_resume_to_the_same_bytes(tmp_path, scored4, stage):
    src = scored4
    if stage == "relabel":
        src = tmp_path / "filtered"
        invoke("filter", scored4, "--out", src, "--sampling", "random", "--seed", "3", "--negatives-per-query", "2")
    args = (stage, src) + (("--sampling", "random", "--seed", "3", "--negatives-per-query", "2")
                           if stage == "filter" else ())
    invoke(*args, "--out", tmp_path / "full")
    kill_then_resume(args, tmp_path / "killed", kill_after=3)
    assert files(tmp_path / "killed") == files(tmp_path / "full")
    assert summary(tmp_path / "killed") == summary(tmp_path / "full")


def test_bm25_index_killed_leaves_no_success_and_a_rerun_finishes(tmp_path, data_dir, index_dirs):
    out = tmp_path / "index"
    killed = hardneg("index", data_dir, "--out", out, "--retriever", "bm25", kill_after=1)
    assert killed.returncode == KILLED and not (out / "_SUCCESS").exists()
    with pytest.raises(HardnegError, match="_SUCCESS"):
        read_stage(out, "index", schemas.MINED)
    rerun = hardneg("index", data_dir, "--out", out, "--retriever", "bm25")
    assert rerun.returncode == 0, rerun.stderr
    assert files(out) == files(index_dirs["bm25"])


def test_dense_index_killed_mid_encoding_resumes_to_the_same_embeddings(tmp_path, data_dir):
    args = ("index", data_dir, "--retriever", "dense", "--batch-size", "4", "--encode-chunk-size", "4")
    out = tmp_path / "killed"
    proc = hardneg(*args, "--out", out, popen=True)
    first_chunk = out / "dense" / "chunks" / "emb-00000.npy"
    while proc.poll() is None and not first_chunk.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == KILLED and first_chunk.exists() and not (out / "_SUCCESS").exists()
    invoke(*args, "--out", tmp_path / "full")  # the uninterrupted run, in this process
    rerun = hardneg(*args, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    emb = "dense/embeddings.npy"
    assert (out / emb).read_bytes() == (tmp_path / "full" / emb).read_bytes()


PIPELINE = """
[index]
retriever = "hybrid"
[mine]
top_k = 5
query_batch_size = 2
[filter]
sampling = "random"
seed = 7
negatives_per_query = 2
"""


def test_a_whole_run_killed_in_mine_resumes_and_is_byte_identical_to_an_uninterrupted_run(tmp_path, tiny_src):
    """Determinism across processes and resumability of `hardneg run`: every Parquet, .npy and index file of every
    stage, and the training file, are the same bytes."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(PIPELINE)
    invoke("run", tiny_src, "--out", tmp_path / "a", "--config", cfg)  # uninterrupted, in this process
    # import writes 3 tables, index 1 (doc_ids), mine 4 parts: the 6th part is mine's second
    killed = hardneg("run", tiny_src, "--out", tmp_path / "b", "--config", cfg, kill_after=6)
    assert killed.returncode == KILLED
    assert (tmp_path / "b" / "index" / "_SUCCESS").exists() and not (tmp_path / "b" / "mined" / "_SUCCESS").exists()
    rerun = hardneg("run", tiny_src, "--out", tmp_path / "b", "--config", cfg)
    assert rerun.returncode == 0, rerun.stderr
    assert "[import] up to date" in rerun.stderr and "[index] up to date" in rerun.stderr
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert any(k.endswith("embeddings.npy") for k in a) and "train.parquet" in a

    # killed while writing the training file's manifest: the file is there, its manifest is not
    (tmp_path / "b" / "train.parquet.manifest.json").unlink()
    (tmp_path / "b" / "train.parquet").write_bytes(b"partial")
    again = hardneg("run", tiny_src, "--out", tmp_path / "b", "--config", cfg)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("up to date") == 6
    assert (tmp_path / "b" / "train.parquet").read_bytes() == a["train.parquet"]


def test_a_training_file_without_its_manifest_is_named_as_an_interrupted_export(tmp_path, relabeled_dir, data_dir):
    out = tmp_path / "train.parquet"
    out.write_bytes(b"partial")  # what a kill between the file's rename and its manifest leaves
    result = invoke("export", relabeled_dir, "--data", data_dir, "--out", out, ok=False)
    assert result.exit_code == 2 and "without its manifest" in result.output and "--overwrite" in result.output
    invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--overwrite")
    assert Path(f"{out}.manifest.json").exists() and out.read_bytes()[:4] == b"PAR1"
