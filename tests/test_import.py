import gzip
import json

import pyarrow.parquet as pq
import pytest

from conftest import bad_source, invoke, read_tiny


def test_beir_import_writes_the_three_tables(data_dir):
    corpus, queries, qrels = read_tiny()
    assert (data_dir / "_SUCCESS").exists()
    c = pq.read_table(data_dir / "corpus.parquet")
    assert c.column_names == ["doc_id", "title", "text"] and c.num_rows == len(corpus)
    q = pq.read_table(data_dir / "queries.parquet")
    assert q.column_names == ["query_id", "text"] and q.num_rows == len(queries)
    r = pq.read_table(data_dir / "qrels.parquet")
    assert r.column_names == ["query_id", "doc_id", "relevance"] and r.num_rows == len(qrels)
    assert str(r.schema.field("relevance").type) == "int32"


def write_tsv_source(d, corpus, queries, qrels):
    d.mkdir()
    (d / "collection.tsv").write_text("".join(f"{x['_id']}\t{x['text']}\n" for x in corpus))
    (d / "queries.tsv").write_text("".join(f"{x['_id']}\t{x['text']}\n" for x in queries))
    (d / "qrels.tsv").write_text("".join(f"{q} 0 {doc} {s}\n" for q, doc, s in qrels))


def test_tsv_jsonl_and_parquet_sources_give_the_same_ids(tmp_path, data_dir):
    corpus, queries, qrels = read_tiny()
    write_tsv_source(tmp_path / "tsv", corpus, queries, qrels)
    invoke("import", tmp_path / "tsv", "--out", tmp_path / "tsv-data")
    jl = tmp_path / "jsonl"
    jl.mkdir()
    (jl / "corpus.jsonl").write_text("".join(json.dumps({"doc_id": x["_id"], "text": x["text"]}) + "\n" for x in corpus))
    (jl / "queries.jsonl").write_text("".join(json.dumps({"query_id": x["_id"], "text": x["text"]}) + "\n" for x in queries))
    (jl / "qrels.jsonl").write_text("".join(json.dumps({"query_id": q, "doc_id": d, "relevance": int(s)}) + "\n" for q, d, s in qrels))
    invoke("import", jl, "--out", tmp_path / "jsonl-data")
    pqdir = tmp_path / "pq"
    pqdir.mkdir()
    for name in ("corpus", "queries", "qrels"):
        pq.write_table(pq.read_table(data_dir / f"{name}.parquet"), pqdir / f"{name}.parquet")
    invoke("import", pqdir, "--out", tmp_path / "pq-data")
    for out in ("tsv-data", "jsonl-data", "pq-data"):
        for name, key in (("corpus", "doc_id"), ("queries", "query_id"), ("qrels", "doc_id")):
            got = pq.read_table(tmp_path / out / f"{name}.parquet")[key].to_pylist()
            assert got == pq.read_table(data_dir / f"{name}.parquet")[key].to_pylist(), (out, name)


CASES = {
    "duplicate doc id": (lambda c, q, r: dict(corpus=c + [c[0]]), "duplicate doc_id"),
    "qrels unknown doc": (lambda c, q, r: dict(qrels=r + [[r[0][0], "NOPE", "1"]]), "'NOPE' is not in"),
    "missing id column": (lambda c, q, r: dict(corpus=[{"title": x["title"], "text": x["text"]} for x in c]), "no column for 'doc_id'"),
    "empty text": (lambda c, q, r: dict(queries=[{**q[0], "text": "   "}] + q[1:]), "empty text"),
    "empty corpus": (lambda c, q, r: dict(corpus=[], qrels=[]), "corpus is empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_no_output(tmp_path, case):
    make, expected = CASES[case]
    src = bad_source(tmp_path, **make(*read_tiny()))
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_truncated_gzip_names_the_file(tmp_path):
    src = bad_source(tmp_path)
    raw = gzip.compress((src / "corpus.jsonl").read_bytes())
    (src / "corpus.jsonl").unlink()
    (src / "corpus.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    result = invoke("import", src, "--out", tmp_path / "out", ok=False)
    assert result.exit_code == 2 and "corpus.jsonl.gz" in result.output and "truncated" in result.output
