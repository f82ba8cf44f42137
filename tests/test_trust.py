"""Issue 19, "trust only what was verified": one writer per stage directory, inputs checked against their manifests,
lineage by content, options validated at the boundary, `--overwrite` never deleting an input, clean interrupts, and
the crashes and silent drops the issue lists. One test per case; process cases run real `hardneg` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FAKE, hardneg, invoke
from hardneg import schemas
from hardneg.errors import HardnegError
from hardneg.io.stagedir import read_manifest, read_stage


def wait_for(proc, path_glob: tuple[Path, str], timeout: float = 600) -> None:
    """Poll until a file matching `glob` exists in `dir` (or the process ended)."""
    d, pattern = path_glob
    end = time.monotonic() + timeout
    while proc.poll() is None and not list(d.glob(pattern)) and time.monotonic() < end:
        time.sleep(0.05)
    assert proc.poll() is None, f"the process ended before {d}/{pattern} appeared: {proc.communicate()}"


def one_error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def mined6(tmp_path_factory, data_dir, index_dirs) -> Path:
    """A mined directory of 4 parts (8 queries, 2 per part), to copy and damage."""
    out = tmp_path_factory.mktemp("trust") / "mined"
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", out, "--top-k", "5", "--query-batch-size", "2")
    return out


@pytest.fixture
def mined_copy(tmp_path, mined6) -> Path:
    out = tmp_path / "mined"
    shutil.copytree(mined6, out)
    return out


# -- 1. two writers -----------------------------------------------------------------------------------------------

def test_1_a_second_writer_started_while_the_first_writes_is_refused_naming_it(tmp_path, mined6, data_dir):
    """The issue's case: score with --max-seq-length 128, then, once a part exists, the same with 16 and --overwrite.
    The second is refused (exit 2, pid@host of the first); the first finishes with only its own parts. The fake
    teacher scores the first max_seq_length words, so the two configs write different parts."""
    out = tmp_path / "scored"
    args = ("score", mined6, "--data", data_dir, "--out", out, "--no-cache", *FAKE)
    go = tmp_path / "go"
    first = hardneg(*args, "--max-seq-length", "128", popen=True, stall=(1, go))  # held after its first part
    wait_for(first, (out, "part-*.parquet"))
    second = hardneg(*args, "--max-seq-length", "16", "--overwrite")
    go.touch()
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert f"another hardneg process is writing it (pid {first.pid}@{socket.gethostname()}" in line, line
    assert first.wait(timeout=900) == 0, first.communicate()
    assert read_manifest(out)["config"]["max_seq_length"] == 128
    reference = tmp_path / "reference"
    invoke(*args[:4], "--out", reference, "--no-cache", *FAKE, "--max-seq-length", "128")
    other = tmp_path / "other"
    invoke(*args[:4], "--out", other, "--no-cache", *FAKE, "--max-seq-length", "16")
    assert any((other / p.name).read_bytes() != p.read_bytes() for p in reference.glob("part-*.parquet"))
    for p in sorted(reference.glob("part-*.parquet")):  # every part is the 128-token run's
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name


def test_1_two_writers_started_together_leave_one_consistent_output(tmp_path, mined6, data_dir):
    out = tmp_path / "scored"
    args = ("score", mined6, "--data", data_dir, "--out", out, "--no-cache", *FAKE)
    go = tmp_path / "go"
    procs = [hardneg(*args, "--max-seq-length", n, *extra, popen=True, stall=(1, go))  # a winner waits for `go`
             for n, extra in (("128", ()), ("16", ("--overwrite",)))]
    end = time.monotonic() + 600
    while all(p.poll() is None for p in procs) and time.monotonic() < end:
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=900) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)
    assert "another hardneg process is writing it" in one_error_line(loser[1])
    winner = 0 if results[0][2] == 0 else 1
    assert read_manifest(out)["config"]["max_seq_length"] == (128, 16)[winner]
    read_stage(out, "score", schemas.SCORED)  # verified: every part is listed with its digest


def test_1_two_identical_runs_staggered_do_not_rewrite_a_finished_stage(tmp_path, tiny_src):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[mine]\ntop_k = 5\nquery_batch_size = 1\n[score]\nbatch_size = 1\n"
                   f'teacher_kind = "{FAKE[1]}"\n')
    out = tmp_path / "run"
    go = tmp_path / "go"
    # import writes 3 parts, index 1, mine 8: the 13th is score's first; the first run is held there
    first = hardneg("run", tiny_src, "--out", out, "--config", cfg, popen=True, stall=(13, go))
    wait_for(first, (out / "scored", "part-*.parquet"))
    mined_manifest = (out / "mined" / "_manifest.json").read_bytes()
    second = hardneg("run", tiny_src, "--out", out, "--config", cfg)
    go.touch()
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}@" in one_error_line(second.stderr)
    assert first.wait(timeout=900) == 0, first.communicate()
    assert (out / "mined" / "_manifest.json").read_bytes() == mined_manifest  # the finished stage was not rewritten
    third = hardneg("run", tiny_src, "--out", out, "--config", cfg)
    assert third.returncode == 0 and third.stderr.count("up to date") == 7, third.stderr


def test_1_a_lock_of_a_killed_writer_is_no_obstacle(tmp_path, mined6, data_dir):
    """The lock is an flock: the kernel releases it when its holder dies, even by SIGKILL (here while it is held
    after its first part, so the kill always lands mid-stage)."""
    out = tmp_path / "scored"
    args = ("score", mined6, "--data", data_dir, "--out", out, "--no-cache", *FAKE)
    killed = hardneg(*args, popen=True, stall=(1, tmp_path / "never"))
    wait_for(killed, (out, "part-*.parquet"))
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert json.loads((out / "_lock").read_text())["pid"] == killed.pid  # its name is still written there
    rerun = hardneg(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "_lock").read_text() == ""  # emptied on release


def test_1_the_same_shard_twice_is_refused_other_shards_are_not(tmp_path, mined6, data_dir):
    from hardneg.io.stagedir import lock_stage_dir

    out = tmp_path / "s"
    out.mkdir()
    held = lock_stage_dir(out, (0, 2))
    try:
        other = lock_stage_dir(out, (1, 2))  # a cooperating shard
        for lock in other:
            lock.release()
        twice = hardneg("score", mined6, "--data", data_dir, "--out", out, "--no-cache", "--shard", "0/2")
        assert twice.returncode == 2 and "shard 0/2 is already being written" in one_error_line(twice.stderr)
        whole = hardneg("score", mined6, "--data", data_dir, "--out", out, "--no-cache")
        assert whole.returncode == 2 and "(shard 0/2)" in one_error_line(whole.stderr)
    finally:
        for lock in held:
            lock.release()


# -- 2. readers trust the manifest, not the glob ------------------------------------------------------------------

def test_2_a_deleted_part_is_refused(tmp_path, mined_copy, data_dir):
    (mined_copy / "part-00001.parquet").unlink()
    result = invoke("score", mined_copy, "--data", data_dir, "--out", tmp_path / "s", ok=False)
    assert result.exit_code == 2 and "part-00001.parquet: missing, but" in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_2_an_extra_part_is_refused(tmp_path, mined_copy, data_dir):
    shutil.copy(mined_copy / "part-00000.parquet", mined_copy / "part-00009.parquet")
    result = invoke("score", mined_copy, "--data", data_dir, "--out", tmp_path / "s", ok=False)
    assert result.exit_code == 2 and "part-00009.parquet: not listed in" in result.output, result.output


@pytest.mark.parametrize("how", ["same-size", "truncated"])
def test_2_an_altered_part_is_refused(tmp_path, mined_copy, data_dir, how):
    part = mined_copy / "part-00002.parquet"
    data = bytearray(part.read_bytes())
    if how == "same-size":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    part.write_bytes(bytes(data))
    result = invoke("score", mined_copy, "--data", data_dir, "--out", tmp_path / "s", ok=False)
    expected = "content differs from the sha256" if how == "same-size" else "bytes, "
    assert result.exit_code == 2 and expected in result.output, result.output
    with pytest.raises(HardnegError, match="part-00002.parquet"):
        read_stage(mined_copy, "mine", schemas.MINED)


def test_2_run_does_not_call_a_damaged_training_file_or_stage_up_to_date(tmp_path, tiny_src, fake_config):
    out = tmp_path / "run"
    run = ("run", tiny_src, "--out", out, "--config", fake_config)
    invoke(*run)
    train = out / "train.parquet"
    train.write_bytes(train.read_bytes()[:-10])  # truncated
    result = invoke(*run, ok=False)
    assert result.exit_code == 2 and "train.parquet: missing, truncated or altered" in result.output, result.output
    (out / "filtered" / "part-00000.parquet").unlink()
    result = invoke(*run, ok=False)
    assert result.exit_code == 2 and "filtered/part-00000.parquet: missing" in result.output, result.output
    again = invoke(*run, "--overwrite")
    assert "[filter] rebuilding" in again.output
    assert invoke(*run).output.count("up to date") == 7


# -- 3. lineage by content ----------------------------------------------------------------------------------------

def test_3_an_edited_source_is_noticed_by_run(tmp_path, tiny_src, fake_config):
    src = tmp_path / "src"
    shutil.copytree(tiny_src, src)
    out = tmp_path / "run"
    run = ("run", src, "--out", out, "--config", fake_config)
    invoke(*run)
    os.utime(src / "queries.jsonl")  # touched, same content: still up to date
    assert invoke(*run).output.count("up to date") == 7
    lines = (src / "queries.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["text"] = "an edited query text"
    (src / "queries.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = invoke(*run, ok=False)
    assert result.exit_code == 2 and "queries.jsonl: changed since it was imported" in result.output, result.output
    invoke(*run, "--overwrite")
    queries = pq.read_table(out / "data" / "queries.parquet").to_pylist()
    assert {"query_id": first["_id"], "text": "an edited query text"} in queries


@pytest.fixture(scope="module")
def other_data(tmp_path_factory, tiny_src) -> Path:
    """The tiny dataset with one document's text changed: another dataset, with the same ids."""
    d = tmp_path_factory.mktemp("other")
    shutil.copytree(tiny_src, d / "src")
    import gzip

    corpus = [json.loads(x) for x in gzip.open(d / "src" / "corpus.jsonl.gz", "rt")]
    corpus[0]["text"] = "something else entirely"
    with gzip.open(d / "src" / "corpus.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in corpus))
    invoke("import", d / "src", "--out", d / "data")
    return d / "data"


def test_3_score_refuses_a_data_that_mine_did_not_use(tmp_path, mined6, other_data):
    result = invoke("score", mined6, "--data", other_data, "--out", tmp_path / "s", ok=False)
    assert result.exit_code == 2 and f"{other_data}: is not the dataset" in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_3_export_refuses_a_data_that_mine_did_not_use(tmp_path, relabeled_dir, other_data):
    result = invoke("export", relabeled_dir, "--data", other_data, "--out", tmp_path / "t.parquet", ok=False)
    assert result.exit_code == 2 and f"{other_data}: is not the dataset" in result.output, result.output
    assert not (tmp_path / "t.parquet").exists()


def test_3_paths_may_move_the_same_content_is_the_same_input(tmp_path, tiny_src, data_dir, index_dirs, fake_config):
    """A moved run is up to date, and a killed stage resumes when its inputs are named by another path."""
    invoke("run", tiny_src, "--out", tmp_path / "a", "--config", fake_config)
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    moved = invoke("run", tiny_src, "--out", tmp_path / "moved", "--config", fake_config)
    assert moved.output.count("up to date") == 7

    rel_index = os.path.relpath(index_dirs["bm25"], tmp_path)
    rel_data = os.path.relpath(data_dir, tmp_path)
    args = ("mine", rel_index, "--data", rel_data, "--out", "m", "--top-k", "5", "--query-batch-size", "2")
    killed = hardneg(*args, cwd=tmp_path, kill_after=1)
    assert killed.returncode == -signal.SIGKILL
    resumed = invoke("mine", index_dirs["bm25"].absolute(), "--data", data_dir.absolute(), "--out", tmp_path / "m",
                     "--top-k", "5", "--query-batch-size", "2")
    assert resumed.exit_code == 0 and (tmp_path / "m" / "_SUCCESS").exists()


# -- 4. options that switched protection off ----------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (("--ratio", "nan"), "ratio = nan is not a finite number"),
    (("--ratio", "5"), "ratio = 5.0 must be in (0, 1]"),
    (("--ratio", "inf"), "ratio = inf is not a finite number"),
    (("--ratio", "0"), "ratio = 0.0 must be in (0, 1]"),
    (("--rule", "margin-pos", "--margin", "nan"), "margin = nan is not a finite number"),
    (("--max-score", "0.3", "--min-score", "0.5"), "min_score = 0.5 is not below max_score = 0.3"),
    (("--max-score", "inf"), "max_score = inf is not a finite number"),
])
def test_4_nonsense_filter_options_are_one_line(tmp_path, scored_dir, args, expected):
    result = invoke("filter", scored_dir, "--out", tmp_path / "f", *args, ok=False)
    assert result.exit_code == 2 and result.output.startswith("error: ") and expected in result.output, result.output
    assert not (tmp_path / "f").exists()


def test_4_a_nan_teacher_score_is_an_error_naming_its_rows(tmp_path, scored_dir):
    from hardneg.io.stagedir import StageWriter

    scored = read_stage(scored_dir, "score", schemas.SCORED)
    scores = scored["teacher_score"].to_pylist()
    scores[3] = float("nan")
    bad = scored.set_column(scored.schema.get_field_index("teacher_score"), "teacher_score",
                            pa.array(scores, pa.float32()))
    nan_dir = tmp_path / "scored"
    with StageWriter(nan_dir, "score", {"fake": True}) as w:
        w.write_table("part-00000.parquet", bad)
        w.finish()
    result = invoke("filter", nan_dir, "--out", tmp_path / "f", ok=False)
    q, d = scored["query_id"][3].as_py(), scored["doc_id"][3].as_py()
    assert result.exit_code == 2 and "1 rows have a NaN or missing teacher_score" in result.output, result.output
    assert f"row 3 (query {q!r}, doc {d!r})" in result.output


def test_4_a_cross_encoder_with_an_untrained_head_is_refused(tmp_path, mined6, data_dir):
    result = invoke("score", mined6, "--data", data_dir, "--out", tmp_path / "s", "--teacher-kind", "cross-encoder",
                    "--teacher", "all-MiniLM-L6-v2", "--no-cache", ok=False)
    assert result.exit_code == 2 and "has no classification head (classifier.weight" in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_4_a_trained_cross_encoder_is_accepted(trained_cross_encoder):
    from hardneg.models import load_cross_encoder, untrained_head

    model = load_cross_encoder(str(trained_cross_encoder), "cpu", None, False)
    assert untrained_head(model.model, str(trained_cross_encoder)) == []


# -- 5. --overwrite never deletes nor writes inside an input ------------------------------------------------------

def test_5_mine_overwrite_onto_its_own_data_is_refused(tmp_path, data_dir, index_dirs):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    result = invoke("mine", index_dirs["bm25"], "--data", data, "--out", data, "--overwrite", ok=False)
    assert result.exit_code == 2 and "which this command reads" in result.output, result.output
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before
    inside = invoke("mine", index_dirs["bm25"], "--data", data, "--out", data / "mined", ok=False)
    assert inside.exit_code == 2 and "is inside" in inside.output


def test_5_export_overwrite_onto_the_datasets_corpus_is_refused(tmp_path, relabeled_dir, data_dir):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    corpus = (data / "corpus.parquet").read_bytes()
    result = invoke("export", relabeled_dir, "--data", data, "--out", data / "corpus.parquet", "--overwrite", ok=False)
    assert result.exit_code == 2 and "which this command reads" in result.output, result.output
    assert (data / "corpus.parquet").read_bytes() == corpus


# -- crashes and confusing answers --------------------------------------------------------------------------------

def test_crash_min_relevance_beyond_the_data_is_one_line(tmp_path, data_dir, index_dirs):
    result = invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--min-relevance", "5",
                    ok=False)
    assert result.exit_code == 2 and "--min-relevance 5: no qrels row" in result.output, result.output
    assert not (tmp_path / "m").exists()


def test_crash_a_folder_that_is_not_a_model_is_one_line(tmp_path, data_dir):
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hello")
    result = invoke("index", data_dir, "--out", tmp_path / "i", "--retriever", "dense", "--model",
                    tmp_path / "notamodel", ok=False)
    assert result.exit_code == 2
    assert "cannot load it as a sentence-transformers model" in one_error_line(result.output)
    assert not (tmp_path / "i").exists()


def test_crash_an_invalid_json_manifest_is_one_line(tmp_path, mined_copy, data_dir):
    (mined_copy / "_manifest.json").write_text("{not json")
    result = hardneg("score", mined_copy, "--data", data_dir, "--out", tmp_path / "s")
    assert result.returncode == 2 and "_manifest.json: not valid JSON" in one_error_line(result.stderr)


def test_crash_top_k_0_speaks_of_top_k(tmp_path, data_dir, index_dirs):
    result = invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", "0", ok=False)
    assert result.exit_code == 2 and "top_k must be at least 1" in result.output, result.output


def test_crash_a_failed_run_leaves_no_empty_out(tmp_path, tiny_src):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[mine]\nmin_relevance = 9\n")
    result = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", cfg, ok=False)
    assert result.exit_code == 2 and "--min-relevance 9" in result.output
    src = tmp_path / "empty-src"
    src.mkdir()
    result = invoke("run", src, "--out", tmp_path / "run2", ok=False)
    assert result.exit_code == 2 and not (tmp_path / "run2").exists()


def test_crash_a_full_disk_names_the_file(tmp_path, filtered_dir, monkeypatch):
    import errno

    import hardneg.io.stagedir as stagedir

    def full(table, where, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")  # as Arrow raises it: no file name

    monkeypatch.setattr(stagedir.pq, "write_table", full)
    result = invoke("relabel", filtered_dir, "--out", tmp_path / "r", ok=False)
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'r'}/part-00000.parquet: No space left on device" in result.output, result.output


def test_drop_n_tuple_export_counts_the_queries_it_leaves_out(tmp_path, relabeled_dir, data_dir):
    out = tmp_path / "t.parquet"
    result = invoke("export", relabeled_dir, "--data", data_dir, "--out", out, "--format", "n-tuple")
    summary = json.loads(Path(f"{out}.manifest.json").read_text())["summary"]
    left = summary["queries_with_fewer_negatives"]
    assert left > 0, summary  # the tiny run has queries with fewer negatives than the most any has
    assert f"{left} queries with fewer than {summary['negatives_per_row']} negatives left out" in result.output


def test_keep_flagged_rows_are_not_reported_as_promoted(tmp_path, filtered_dir):
    from hardneg.figures import FLAGGED, _group

    out = tmp_path / "r"
    invoke("relabel", filtered_dir, "--out", out, "--policy", "keep-flagged")
    df = pl.from_arrow(read_stage(out, "relabel", schemas.RELABELED)).with_columns(_group().alias("g"))
    flagged = df.filter(pl.col("label") == "flagged")
    assert flagged.height > 0 and (flagged["label_source"] == "teacher").any()
    assert flagged["g"].unique().to_list() == [FLAGGED]
    assert "promoted to positive" not in df.filter(pl.col("label") != "positive")["g"].to_list()


# -- clean interrupts ---------------------------------------------------------------------------------------------

HYBRID = """
[index]
retriever = "hybrid"
batch_size = 2
encode_chunk_size = 16
"""


@pytest.fixture(scope="module")
def slow_src(tmp_path_factory, tiny_src) -> Path:
    """The tiny collection with 150 more documents (variants of its texts), so that encoding lasts long enough to be
    interrupted twice in the middle."""
    import gzip

    d = tmp_path_factory.mktemp("slow") / "src"
    shutil.copytree(tiny_src, d)
    corpus = [json.loads(x) for x in gzip.open(d / "corpus.jsonl.gz", "rt")]
    extra = [{"_id": f"X{i}", "title": "", "text": f"{corpus[i % len(corpus)]['text']} variant {i}"}
             for i in range(150)]
    with gzip.open(d / "corpus.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in corpus + extra))
    return d


def test_interrupts_during_encoding_inside_run_stop_cleanly_and_resume(tmp_path, slow_src):
    """SIGINT, then SIGTERM on the resumed run, each while the index encodes; a third run finishes. Each stop exits
    130/143 within seconds with one line, keeps the finished chunks (the next run does not re-encode them) and starts
    no later stage."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(HYBRID)
    out = tmp_path / "run"
    chunks_dir = out / "index" / "dense" / "chunks"

    def chunks() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in chunks_dir.glob("emb-*.npy")}

    kept: dict[str, int] = {}
    for sig, code, name in ((signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")):
        proc = hardneg("run", slow_src, "--out", out, "--config", cfg, popen=True)
        end = time.monotonic() + 600
        while proc.poll() is None and len(chunks()) <= len(kept) and time.monotonic() < end:
            time.sleep(0.05)  # until this run has written a chunk of its own
        assert proc.poll() is None, f"the run ended before it encoded a chunk: {proc.communicate()}"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)  # "within seconds": a bound, not a measurement
        assert proc.returncode == code, stderr
        assert stderr.rstrip().endswith(f"interrupted ({name}): the finished parts are kept; rerun the same "
                                        f"command to resume"), stderr
        assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
        assert not (out / "mined").exists() and not (out / "index" / "_SUCCESS").exists()
        now = chunks()
        assert len(now) > len(kept) and all(now[k] == t for k, t in kept.items())  # resumed, not re-encoded
        kept = now
    rerun = hardneg("run", slow_src, "--out", out, "--config", cfg)
    assert rerun.returncode == 0, rerun.stderr
    assert "[import] up to date" in rerun.stderr and (out / "train.parquet").exists()
