"""The bad-input catalogue (beyond the cases in test_import.py): each is one line on stderr naming the file, the row
or column and the fix, exit code 2, no traceback, and no output left behind."""

import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FAKE_CONFIG, invoke, read_tiny
from conftest import bad_source


def assert_clean_error(result, out, *expected):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip() and "it/s]" not in x]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for text in expected:
        assert text in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists(), f"{out} left behind"


def import_bad(tmp_path, *expected, **tables):
    src = bad_source(tmp_path, **tables)
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", *expected)
    return src


c0, q0, r0 = read_tiny()

# name -> (tables for bad_source, substrings the error line must hold)
CATALOGUE = {
    "misnamed text column": (dict(queries=[{"_id": q["_id"], "question": q["text"]} for q in q0]),
                             ["queries.jsonl", "no column for 'text'", "question"]),
    "misnamed qrels column": (dict(qrels=[["query-id", "corpus", "score"]] + r0),
                              ["qrels.tsv", "no column for 'doc_id'"]),
    "relevance not an integer": (dict(qrels=r0[:3] + [[r0[3][0], r0[3][1], "high"]] + r0[4:]),
                                 ["qrels.tsv", "line 5", "'high' is not an integer"]),
    "text is a list": (dict(corpus=c0[:2] + [{**c0[2], "text": ["a", "b"]}] + c0[3:]),
                       ["corpus.jsonl", "line 3", "text should be text"]),
    "duplicate query id": (dict(queries=q0 + [q0[1]]), ["queries.jsonl", f"record {len(q0) + 1}", "duplicate query_id"]),
    "whitespace-only document": (dict(corpus=c0[:4] + [{**c0[4], "title": " ", "text": "\t \u3000"}] + c0[5:]),
                                 ["corpus.jsonl", "record 5", "empty title and text"]),
    "qrels unknown query": (dict(qrels=r0 + [["NO-SUCH-Q", r0[0][1], "1"]]),
                            ["qrels.tsv", f"record {len(r0) + 1}", "'NO-SUCH-Q' is not in", "queries.jsonl"]),
    "empty corpus file": (dict(corpus=[]), ["corpus.jsonl", "corpus is empty"]),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_source_catalogue(tmp_path, case):
    tables, expected = CATALOGUE[case]
    if case == "misnamed qrels column":  # bad_source writes its own header; write this qrels file by hand
        src = bad_source(tmp_path)
        (src / "qrels.tsv").write_text("".join("\t".join(r) + "\n" for r in tables["qrels"]))
        result = invoke("import", src, "--out", tmp_path / "out", ok=False)
        assert_clean_error(result, tmp_path / "out", *expected)
        return
    import_bad(tmp_path, *expected, **tables)


def test_non_utf8_bytes_name_the_line(tmp_path):
    src = bad_source(tmp_path)
    lines = (src / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    lines[6] = lines[6].replace(b'"text": "', b'"text": "caf\xe9 ')  # latin-1, not UTF-8
    (src / "corpus.jsonl").write_bytes(b"".join(lines))
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", "corpus.jsonl", "line 7", "not UTF-8", "re-encode")


def test_truncated_jsonl_line_names_the_line(tmp_path):
    src = bad_source(tmp_path)
    text = (src / "queries.jsonl").read_text()
    (src / "queries.jsonl").write_text(text[: len(text) - 15])  # the last line cut mid-record
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", "queries.jsonl", f"line {len(q0)}", "not valid JSON")


@pytest.mark.parametrize("kind", ["source", "stage part"])
def test_truncated_parquet_names_the_file(tmp_path, data_dir, mined_dir, kind):
    if kind == "source":
        src = tmp_path / "src"
        src.mkdir()
        for name in ("corpus", "queries", "qrels"):
            shutil.copy(data_dir / f"{name}.parquet", src / f"{name}.parquet")
        raw = (src / "corpus.parquet").read_bytes()
        (src / "corpus.parquet").write_bytes(raw[: len(raw) // 2])
        result = invoke("import", src, "--out", tmp_path / "out", ok=False)
        assert_clean_error(result, tmp_path / "out", "corpus.parquet", "not a readable Parquet file")
    else:  # a finished stage whose part was damaged afterwards
        mined = tmp_path / "mined"
        shutil.copytree(mined_dir, mined)
        part = next(mined.glob("part-*.parquet"))
        part.write_bytes(part.read_bytes()[:100])
        result = invoke("filter", mined, "--out", tmp_path / "out", ok=False)
        assert_clean_error(result, tmp_path / "out", "mined", "score")  # not a score output: refused first
        result = invoke("score", mined, "--data", data_dir, "--out", tmp_path / "out", ok=False)
        # refused by the manifest's size before any Parquet reader sees it (tests/test_trust.py: altered parts)
        assert_clean_error(result, tmp_path / "out", part.name, "altered or truncated", "--overwrite")


def test_parquet_column_of_the_wrong_type_names_the_column(tmp_path, data_dir):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("corpus", "queries"):
        shutil.copy(data_dir / f"{name}.parquet", src / f"{name}.parquet")
    qrels = pq.read_table(data_dir / "qrels.parquet")
    bad = qrels.set_column(2, "relevance", pa.array(["yes"] * qrels.num_rows))
    pq.write_table(bad, src / "qrels.parquet")
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", "qrels.parquet", "column 'relevance'", "expected int32")


def test_queries_without_a_positive_are_skipped_and_counted_in_the_run_summary(tmp_path):
    corpus, queries, qrels = read_tiny()
    zero = qrels[0][0]
    qrels = [[q, d, "0" if q == zero else s] for q, d, s in qrels]  # judged, but not relevant
    extra = {"_id": "UNJUDGED", "text": "a query nobody judged"}
    src = bad_source(tmp_path, queries=queries + [extra], qrels=qrels)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[mine]\ntop_k = 3\n" + FAKE_CONFIG)  # the fake teacher: the point is the counting
    result = invoke("run", src, "--out", tmp_path / "run", "--config", cfg)
    assert "1 without a positive skipped" in result.output, result.output
    assert "1 without qrels dropped" in result.output, result.output
    s = json.loads(invoke("summary", tmp_path / "run", "--json").output)
    assert s["queries"] == len(queries) - 1 and s["queries_without_positive_skipped"] == 1
    assert s["queries_without_qrels_dropped"] == 1


def test_a_single_huge_document_is_indexed_and_mined(tmp_path):
    """5 MB of text in one document: BM25 indexes it whole, the encoder truncates it (the bi-encoder teacher uses the
    same encoding path); nothing hangs and the document is retrievable."""
    corpus, queries, qrels = read_tiny()
    words = " ".join(f"word{i % 5000}" for i in range(700_000))
    assert len(words) > 5_000_000
    huge = {"_id": "HUGE", "title": "", "text": words}
    src = bad_source(tmp_path, corpus=corpus + [huge], qrels=qrels + [[qrels[0][0], "HUGE", "1"]])
    invoke("import", src, "--out", tmp_path / "data")
    invoke("index", tmp_path / "data", "--out", tmp_path / "index", "--retriever", "hybrid")
    invoke("mine", tmp_path / "index", "--data", tmp_path / "data", "--out", tmp_path / "mined", "--top-k", "3")
    from hardneg import schemas
    from hardneg.io.stagedir import read_stage

    mined = read_stage(tmp_path / "mined", "mine", schemas.MINED)
    assert "HUGE" in mined["doc_id"].to_pylist()


@pytest.mark.parametrize("command", ["import", "index", "mine", "export"])
def test_an_output_that_cannot_be_written_is_a_clear_error(tmp_path, tiny_src, data_dir, index_dirs, relabeled_dir,
                                                           command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "sub"
    args = {
        "import": ("import", tiny_src),
        "index": ("index", data_dir),
        "mine": ("mine", index_dirs["bm25"], "--data", data_dir),
        "export": ("export", relabeled_dir, "--data", data_dir),
    }[command]
    if command == "export":
        out = out / "train.parquet"
    result = invoke(*args, "--out", out, ok=False)
    assert_clean_error(result, out, str(blocker), "choose another --out")
    assert blocker.read_text() == "not a directory"


def test_a_missing_embedding_model_is_a_clear_error(tmp_path, data_dir):
    out = tmp_path / "index"
    result = invoke("index", data_dir, "--out", out, "--retriever", "dense", "--model", tmp_path / "no-model", ok=False)
    assert_clean_error(result, out, "no-model", "does not exist", "pass an existing model folder")


def test_the_wrong_stage_as_input_is_named(tmp_path, data_dir, index_dirs):
    result = invoke("score", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", str(index_dirs["bm25"]), "output of `index`", "mine")


def test_debug_shows_the_traceback(tmp_path):
    from pathlib import Path

    src = bad_source(tmp_path, corpus=[])
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "hardneg"]
    plain = subprocess.run([*cmd, "import", src, "--out", tmp_path / "a"], env=env, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "corpus is empty" in plain.stderr
    debug = subprocess.run([*cmd, "--debug", "import", src, "--out", tmp_path / "b"], env=env, capture_output=True,
                           text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "HardnegError" in debug.stderr
    assert "corpus is empty" in debug.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_gzip_that_is_not_gzip_names_the_file(tmp_path):
    src = bad_source(tmp_path)
    (src / "corpus.jsonl").rename(src / "corpus.jsonl.gz")  # plain text under a .gz name
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", "corpus.jsonl.gz", "gzip")


@pytest.mark.parametrize("column,row,expected", [
    ("text", 3, "record 4 (doc_id"),  # null title and text
    ("query_id", 2, "record 3: empty query_id"),
])
def test_parquet_nulls_count_as_empty(tmp_path, data_dir, column, row, expected):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("corpus", "queries", "qrels"):
        table = pq.read_table(data_dir / f"{name}.parquet")
        if column in table.column_names and (name == "corpus") == (column == "text"):
            for col in ([column, "title"] if column == "text" else [column]):
                values = table[col].to_pylist()
                values[row] = None
                table = table.set_column(table.column_names.index(col), col, pa.array(values, pa.string()))
        pq.write_table(table, src / f"{name}.parquet")
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", ".parquet", expected)


def test_an_unreadable_source_file_is_one_line(tmp_path):
    src = bad_source(tmp_path)
    (src / "corpus.jsonl").unlink()
    (src / "corpus.jsonl").mkdir()  # a directory where a file should be: an OSError, not a HardnegError
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert_clean_error(result, tmp_path / "out", "corpus.jsonl", "Is a directory")
