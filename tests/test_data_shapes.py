"""`hardneg import` on the shapes users have: pairs (Parquet, JSONL, CSV, a save_to_disk folder), triplets CSV,
FlagEmbedding JSONL with and without a candidate pool, explicit CSV files, the Hugging Face sharded Parquet layout,
MS MARCO's qrels.train.txt; and the pipeline run on each."""

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FAKE_CONFIG, invoke, read_tiny
from hardneg.stages.import_ import text_id

SMALL = """
[index]
retriever = "bm25"
[mine]
top_k = 8
[filter]
negatives_per_query = 2
[export]
format = "triplets"
""" + FAKE_CONFIG  # the shapes are about import: the fake teacher scores


def tiny_pairs():
    """(query text, positive text) of every tiny qrel, every document text, and the texts no query labels."""
    corpus, queries, qrels = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    pairs = [(qtext[q], docs[d]) for q, d, _ in qrels]
    labeled = {d for _, d, _ in qrels}
    others = [t for i, t in docs.items() if i not in labeled]
    return pairs, list(docs.values()), others


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, header, rows):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def tables(d):
    return {n: pq.read_table(d / f"{n}.parquet") for n in ("corpus", "queries", "qrels")}


def make_shape(tmp_path, shape):
    """(SRC, extra import args, the (query, positive) text pairs the import must hold) of one source shape."""
    pairs, all_docs, others = tiny_pairs()
    d = tmp_path / shape
    d.mkdir()
    if shape == "pairs-parquet":
        pq.write_table(pa.table({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}), d / "p.parquet")
        write_jsonl(d / "pool.jsonl", [{"text": t} for t in others])
        return d / "p.parquet", ["--corpus", d / "pool.jsonl"], pairs
    if shape == "pairs-jsonl":  # other names, detected: question / answer
        write_jsonl(d / "p.jsonl", [{"question": a, "answer": p} for a, p in pairs])
        return d / "p.jsonl", ["--corpus", write_jsonl(d / "c.jsonl", [{"_id": str(i), "title": "", "text": t}
                                                                        for i, t in enumerate(others)])], pairs
    if shape == "pairs-csv":  # names only the user knows
        write_csv(d / "p.csv", ["q_txt", "doc_txt"], pairs)
        write_csv(d / "pool.csv", ["text"], [[t] for t in others])
        return d / "p.csv", ["--query-column", "q_txt", "--positive-column", "doc_txt", "--corpus",
                             d / "pool.csv"], pairs
    if shape == "save-to-disk":
        import datasets

        datasets.Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}
                                   ).save_to_disk(str(d / "ds"))
        write_jsonl(d / "pool.jsonl", [{"text": t} for t in others])
        return d / "ds", ["--corpus", d / "pool.jsonl"], pairs
    if shape == "triplets-csv":  # each query's negatives are other documents: they become the corpus
        rows = [(a, p, others[(i * 3 + k) % len(others)]) for i, (a, p) in enumerate(pairs) for k in range(3)]
        write_csv(d / "t.csv", ["anchor", "positive", "negative"], rows)
        return d / "t.csv", [], pairs
    if shape == "flagembedding":
        by_q: dict[str, list[str]] = {}
        for a, p in pairs:
            by_q.setdefault(a, []).append(p)
        write_jsonl(d / "fe.jsonl", [{"query": q, "pos": ps, "neg": others[i:i + 6], "prompt": "", "type": "normal"}
                                     for i, (q, ps) in enumerate(by_q.items())])
        return d / "fe.jsonl", [], pairs
    if shape == "flagembedding-pool":
        by_q = {}
        for a, p in pairs:
            by_q.setdefault(a, []).append(p)
        write_jsonl(d / "fe.jsonl", [{"query": q, "pos": ps, "neg": []} for q, ps in by_q.items()])
        write_jsonl(d / "pool.jsonl", [{"text": t} for t in others])
        return d / "fe.jsonl", ["--candidate-pool", d / "pool.jsonl"], pairs
    corpus, queries, qrels = read_tiny()
    qtext = {q["_id"]: q["text"] for q in queries}
    dtext = {x["_id"]: f"{x['title']} {x['text']}".strip() for x in corpus}
    id_pairs = [(qtext[q], dtext[doc]) for q, doc, _ in qrels]
    if shape == "explicit-csv":
        write_csv(d / "docs.csv", ["_id", "title", "text"], [[x["_id"], x["title"], x["text"]] for x in corpus])
        write_csv(d / "qs.csv", ["_id", "text"], [[x["_id"], x["text"]] for x in queries])
        write_csv(d / "rel.csv", ["query-id", "corpus-id", "score"], qrels)
        return None, ["--corpus", d / "docs.csv", "--queries", d / "qs.csv", "--qrels", d / "rel.csv"], id_pairs
    if shape == "hf-sharded":
        (d / "corpus").mkdir()
        (d / "queries").mkdir()
        (d / "qrels").mkdir()
        half = len(corpus) // 2
        for i, part in enumerate((corpus[:half], corpus[half:])):
            pq.write_table(pa.table({"_id": [x["_id"] for x in part], "title": [x["title"] for x in part],
                                     "text": [x["text"] for x in part]}), d / "corpus" / f"corpus-0000{i}-of-00002.parquet")
        pq.write_table(pa.table({"_id": [x["_id"] for x in queries], "text": [x["text"] for x in queries]}),
                       d / "queries" / "queries-00000-of-00001.parquet")
        pq.write_table(pa.table({"query-id": [q for q, _, _ in qrels], "corpus-id": [x for _, x, _ in qrels],
                                 "score": [int(s) for _, _, s in qrels]}), d / "qrels" / "test-00000-of-00001.parquet")
        return d, [], id_pairs
    raise AssertionError(shape)


SHAPES = ["pairs-parquet", "pairs-jsonl", "pairs-csv", "save-to-disk", "triplets-csv", "flagembedding",
          "flagembedding-pool", "explicit-csv", "hf-sharded"]


def imported_pairs(out):
    t = tables(out)
    q = dict(zip(t["queries"]["query_id"].to_pylist(), t["queries"]["text"].to_pylist()))
    c = pl.from_arrow(t["corpus"])
    docs = dict(zip(c["doc_id"], [f"{a} {b}".strip() for a, b in zip(c["title"], c["text"])]))
    return {(q[a], docs[b]) for a, b in zip(t["qrels"]["query_id"].to_pylist(), t["qrels"]["doc_id"].to_pylist())}, t


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_imports_and_runs_through_the_pipeline(tmp_path, shape):
    src, args, pairs = make_shape(tmp_path, shape)
    invoke("import", *([src] if src is not None else []), "--out", tmp_path / "data", *args)
    got, t = imported_pairs(tmp_path / "data")
    assert got == set(pairs)  # every (query, positive), a query with several keeps them all
    texts = [f"{a} {b}".strip() for a, b in zip(t["corpus"]["title"].to_pylist(), t["corpus"]["text"].to_pylist())]
    if shape in ("explicit-csv", "hf-sharded"):
        assert len(texts) == len(read_tiny()[0])  # ids given: every document, the injected duplicate too
    else:  # positives + negatives / pool, each distinct text once: the tiny corpus's duplicate collapses
        _, all_docs, others = tiny_pairs()
        expected = set(p for _, p in pairs) | (set(others) if "--corpus" in args or "--candidate-pool" in args
                                                else set(texts) - set(p for _, p in pairs))
        assert len(texts) == len(set(texts)) and set(texts) == expected
        if shape != "triplets-csv" and shape != "flagembedding":
            assert len(texts) == len(set(all_docs)) < len(all_docs)
    assert t["queries"].num_rows == len({a for a, _ in pairs})
    (tmp_path / "cfg.toml").write_text(SMALL)
    invoke("run", tmp_path / "data", "--out", tmp_path / "run", "--config", tmp_path / "cfg.toml")
    rows = pl.read_parquet(tmp_path / "run" / "train.parquet")
    assert rows.height > 0 and rows.columns == ["anchor", "positive", "negative"]
    assert set(rows.select("anchor", "positive").iter_rows()) <= set(pairs)  # default pairing: labeled positives
    assert not set(rows.select("anchor", "negative").iter_rows()) & set(pairs)


def test_pair_ids_are_text_hashes_and_duplicates_collapse(tmp_path):
    rows = [{"anchor": "what is a cat", "positive": "A cat is a feline."},
            {"anchor": "what is a cat", "positive": "Cats purr."},
            {"anchor": "what is a cat", "positive": "A cat is a feline."},  # a repeated pair
            {"anchor": "what is a dog", "positive": "A cat is a feline."}]  # a shared positive
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    invoke("import", src, "--out", tmp_path / "a")
    t = tables(tmp_path / "a")
    assert t["corpus"]["doc_id"].to_pylist() == [text_id("d", "A cat is a feline."), text_id("d", "Cats purr.")]
    assert t["queries"].num_rows == 2 and t["qrels"].num_rows == 3
    assert set(t["qrels"]["relevance"].to_pylist()) == {1}
    # the same texts in another file and order get the same ids
    pq.write_table(pa.table({"query": [r["anchor"] for r in rows[::-1]], "pos": [r["positive"] for r in rows[::-1]]}),
                   tmp_path / "p.parquet")
    invoke("import", tmp_path / "p.parquet", "--out", tmp_path / "b")
    u = tables(tmp_path / "b")
    for name, key in (("corpus", "doc_id"), ("queries", "query_id")):
        assert sorted(u[name][key].to_pylist()) == sorted(t[name][key].to_pylist())


def test_flagembedding_negatives_keep_or_ignore(tmp_path):
    src = write_jsonl(tmp_path / "fe.jsonl", [{"query": "q1", "pos": ["p1", "p2"], "neg": ["n1", "n2"]},
                                              {"query": "q2", "pos": ["p3"], "neg": ["n2", "p1"]}])
    invoke("import", src, "--out", tmp_path / "keep")
    keep = tables(tmp_path / "keep")
    assert sorted(keep["corpus"]["text"].to_pylist()) == ["n1", "n2", "p1", "p2", "p3"]
    assert keep["qrels"].num_rows == 3  # p1 is q2's negative but still one document, not q2's positive
    result = invoke("import", src, "--out", tmp_path / "ignore", "--flag-negatives", "ignore")
    assert "4 negatives in the source ignored" in result.output
    assert sorted(tables(tmp_path / "ignore")["corpus"]["text"].to_pylist()) == ["p1", "p2", "p3"]


@pytest.mark.parametrize("rows,args,expected", [
    ([{"text_a": "q", "text_b": "p"}], [], "no query column"),
    ([{"anchor": "q", "text_b": "p"}], [], "--positive-column"),
    ([{"anchor": "q", "positive": "p"}], ["--query-column", "nope"], "no column 'nope'"),
    ([{"anchor": "q", "positive": ""}], [], "row 1: no positive text"),
    ([{"anchor": " ", "positive": "p"}], [], "row 1: empty or missing query"),
])
def test_bad_pairs_are_one_line_errors(tmp_path, rows, args, expected):
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    result = invoke("import", src, "--out", tmp_path / "out", *args, ok=False)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_hub_name_needs_allow_download(tmp_path):
    result = invoke("import", "someone/some-pairs", "--out", tmp_path / "out", ok=False)
    assert result.exit_code == 2 and "--allow-download" in result.output


def test_ms_marco_qrels_txt_and_the_missing_split_error(tmp_path):
    corpus, queries, qrels = read_tiny()
    d = tmp_path / "msmarco"
    d.mkdir()
    (d / "collection.tsv").write_text("".join(f"{x['_id']}\t{x['text']}\n" for x in corpus))
    (d / "queries.train.tsv").write_text("".join(f"{x['_id']}\t{x['text']}\n" for x in queries))
    (d / "qrels.train.txt").write_text("".join(f"{q}\t0\t{doc}\t1\n" for q, doc, _ in qrels))
    result = invoke("import", d, "--out", tmp_path / "out", ok=False)
    assert result.exit_code == 2 and "splits found: train" in result.output and "--split train" in result.output
    invoke("import", d, "--out", tmp_path / "out", "--split", "train")
    assert pq.read_table(tmp_path / "out" / "qrels.parquet").num_rows == len(qrels)


def test_explicit_file_replaces_the_one_found(tmp_path, tiny_src):
    _, _, qrels = read_tiny()
    write_csv(tmp_path / "few.csv", ["query-id", "corpus-id", "score"], qrels[:2])
    invoke("import", tiny_src, "--out", tmp_path / "out", "--qrels", tmp_path / "few.csv")
    assert pq.read_table(tmp_path / "out" / "qrels.parquet").num_rows == 2
    result = invoke("import", "--out", tmp_path / "o2", "--qrels", tmp_path / "few.csv", ok=False)
    assert result.exit_code == 2 and "--corpus / --queries" in result.output
