"""Mining: embedding cache (reuse, resume, float16), faiss ivf/hnsw, fusion, depths, rank window, sampling,
same-text flags, graded relevance."""

import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from conftest import invoke, read_tiny
from hardneg import schemas
from hardneg.config import MineConfig
from hardneg.io.stagedir import read_stage


def mined(path) -> pl.DataFrame:
    return pl.from_arrow(read_stage(path, "mine", schemas.MINED))


def summary(path) -> dict:
    return json.loads((path / "_manifest.json").read_text())["summary"]


def top_sets(df: pl.DataFrame, k: int) -> dict[str, set[str]]:
    got = df.filter(pl.col("rank").is_not_null() & (pl.col("rank") <= k))
    return {q: set(g["doc_id"]) for (q,), g in got.group_by("query_id")}


# -- dense: cache, resume, float16, approximate indexes -------------------------------------------------------------

def test_mine_encodes_nothing_and_loads_no_model(tmp_path, data_dir, index_dirs, monkeypatch):
    """index encoded the dataset's queries beside the corpus: mine (same dataset) finds them all there."""
    from hardneg.retrievers import dense

    def no_model(*args, **kwargs):
        raise AssertionError("mine loaded an encoder")

    monkeypatch.setattr(dense, "load_encoder", no_model)
    for retriever in ("dense", "hybrid"):
        for n, extra in enumerate([["--top-k", "5"], ["--top-k", "8", "--sample", "2", "--sampling", "random"]]):
            invoke("mine", index_dirs[retriever], "--data", data_dir, "--out", tmp_path / f"{retriever}{n}", *extra)
    corpus, queries, qrels = read_tiny()
    manifest = json.loads((index_dirs["dense"] / "_manifest.json").read_text())
    assert manifest["summary"]["queries_encoded"] == len({q for q, _, _ in qrels})


def test_cached_query_embeddings_equal_fresh_ones_and_a_new_query_is_encoded(data_dir, index_dirs):
    from hardneg.config import IndexConfig
    from hardneg.retrievers import dense

    cfg = IndexConfig(**json.loads((index_dirs["dense"] / "_manifest.json").read_text())["config"])
    retriever = dense.Dense(index_dirs["dense"], cfg)
    corpus, queries, qrels = read_tiny()
    texts = [q["text"] for q in queries if q["_id"] in {x[0] for x in qrels}][:3] + ["a query the index never saw"]
    got = retriever._encode_queries(texts)
    assert retriever.model is not None  # loaded for the last query only
    fresh = dense.encode(dense.load_encoder(cfg), texts, cfg, cfg.query_prompt, "")
    np.testing.assert_allclose(got, fresh, atol=1e-5)


def test_a_killed_index_resumes_without_reencoding_finished_chunks(tmp_path, data_dir, index_dirs, monkeypatch):
    from hardneg.retrievers import dense

    real_encode = dense.encode
    calls = []

    def dies_on_second_chunk(model, texts, *a):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("killed")  # as if killed while encoding chunk 1
        return real_encode(model, texts, *a)

    out = tmp_path / "index"
    args = ("index", data_dir, "--out", out, "--retriever", "dense", "--encode-chunk-size", "10")
    monkeypatch.setattr(dense, "encode", dies_on_second_chunk)
    died = invoke(*args, ok=False)
    assert died.exit_code == 1 and isinstance(died.exception, RuntimeError)  # the crash itself, not a refusal
    assert [p.name for p in (out / "dense" / "chunks").glob("emb-*.npy")] == ["emb-00000.npy"]
    assert not (out / "_SUCCESS").exists()

    calls.clear()
    monkeypatch.setattr(dense, "encode", lambda model, texts, *a: calls.append(len(texts)) or real_encode(model, texts, *a))
    invoke(*args)
    corpus, queries, qrels = read_tiny()
    # chunks 1 and 2 of 26 documents (chunk 0 came from the killed run), then the queries
    assert calls == [10, 6, len({q for q, _, _ in qrels})]
    assert not (out / "dense" / "chunks").exists()
    resumed = np.load(out / "dense" / "embeddings.npy")
    fresh = np.load(index_dirs["dense"] / "dense" / "embeddings.npy")
    np.testing.assert_allclose(resumed, fresh, atol=1e-5)
    params = json.loads((out / "dense" / "params.json").read_text())
    assert params["model"] == "all-MiniLM-L6-v2" and params["normalized"] and len(params["text_sha256"]) == 64
    assert params["documents"] == 26 and params["max_seq_length"] == 256


def test_float16_cache_is_half_the_size_and_mines_alike(tmp_path, data_dir, index_dirs):
    out = tmp_path / "index16"
    invoke("index", data_dir, "--out", out, "--retriever", "dense", "--embedding-dtype", "float16")
    emb16 = np.load(out / "dense" / "embeddings.npy", mmap_mode="r")
    emb32 = np.load(index_dirs["dense"] / "dense" / "embeddings.npy", mmap_mode="r")
    assert emb16.dtype == np.float16 and emb32.dtype == np.float32
    assert json.loads((out / "dense" / "params.json").read_text())["dtype"] == "float16"
    np.testing.assert_allclose(emb16.astype(np.float32), emb32, atol=2e-3)
    invoke("mine", out, "--data", data_dir, "--out", tmp_path / "m16", "--top-k", "5")
    invoke("mine", index_dirs["dense"], "--data", data_dir, "--out", tmp_path / "m32", "--top-k", "5")
    assert top_sets(mined(tmp_path / "m16"), 3) == top_sets(mined(tmp_path / "m32"), 3)


def clustered(n=3000, dim=32, clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_faiss_indexes_find_what_flat_finds(kind):
    from hardneg.config import IndexConfig
    from hardneg.retrievers.dense import build_faiss, faiss_params

    emb = clustered()
    queries = clustered(n=100, seed=1)
    flat = build_faiss(emb, faiss_params(IndexConfig(faiss="flat"), len(emb)))
    fp = faiss_params(IndexConfig(faiss=kind), len(emb))
    approx = build_faiss(emb, fp)
    if kind == "ivf":
        assert 1 < fp["nlist"] <= len(emb) // 39 and fp["nprobe"] == 16
        approx.nprobe = fp["nprobe"]
    else:
        approx.hnsw.efSearch = fp["ef_search"]
    exact = flat.search(queries, 10)[1]
    got = approx.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)])
    assert recall >= 0.9


def test_hnsw_index_is_saved_with_its_params_and_mines_like_flat(tmp_path, data_dir, index_dirs):
    out = tmp_path / "hnsw"
    invoke("index", data_dir, "--out", out, "--retriever", "dense", "--faiss", "hnsw", "--hnsw-m", "16")
    assert (out / "dense" / "faiss.index").exists()
    assert summary(out)["faiss"] == {"type": "hnsw", "m": 16, "ef_construction": 80, "ef_search": 128,
                                     "metric": "inner_product"}
    invoke("mine", out, "--data", data_dir, "--out", tmp_path / "mh", "--top-k", "5")
    invoke("mine", index_dirs["dense"], "--data", data_dir, "--out", tmp_path / "mf", "--top-k", "5")
    assert top_sets(mined(tmp_path / "mh"), 5) == top_sets(mined(tmp_path / "mf"), 5)


# -- scores of positives the retriever missed ----------------------------------------------------------------------

@pytest.mark.parametrize("retriever", ["bm25", "dense"])
def test_a_missed_positive_gets_the_score_the_retriever_would_give_it(tmp_path, data_dir, index_dirs, retriever):
    invoke("mine", index_dirs[retriever], "--data", data_dir, "--out", tmp_path / "shallow", "--top-k", "1")
    invoke("mine", index_dirs[retriever], "--data", data_dir, "--out", tmp_path / "deep", "--top-k", "26")
    shallow = mined(tmp_path / "shallow").filter(pl.col("is_positive") & pl.col("rank").is_null())
    deep = mined(tmp_path / "deep").filter(pl.col("is_positive") & pl.col("rank").is_not_null())
    both = shallow.join(deep, on=["query_id", "doc_id"], suffix="_deep")
    assert both.height > 0 and shallow["retriever_score"].null_count() == 0
    np.testing.assert_allclose(both["retriever_score"], both["retriever_score_deep"], rtol=1e-4, atol=1e-5)


# -- hybrid: weighted fusion and per-retriever depth ---------------------------------------------------------------

def test_weighted_fusion_min_max_normalizes_each_run_and_names_sources():
    from hardneg.retrievers.hybrid import fuse, minmax_contributions

    runs = {
        "bm25": (np.array([[1, 2, 3]]), np.array([[30.0, 20.0, 10.0]], dtype=np.float32)),
        "dense": (np.array([[3, 4, -1]]), np.array([[0.9, 0.5, np.nan]], dtype=np.float32)),
    }
    contrib = {"bm25": 0.25 * minmax_contributions(*runs["bm25"]), "dense": 0.75 * minmax_contributions(*runs["dense"])}
    idx, score, source, _ = fuse(runs, contrib, 4)
    # bm25 normalized: 1 -> 1, 2 -> .5, 3 -> 0; dense normalized: 3 -> 1, 4 -> 0
    assert idx[0].tolist() == [3, 1, 2, 4]
    np.testing.assert_allclose(score[0], [0.75, 0.25, 0.125, 0.0])
    assert source[0].tolist() == ["bm25+dense", "bm25", "bm25", "dense"]


def test_hybrid_weighted_fusion_with_all_weight_on_dense_ranks_like_dense(tmp_path, data_dir, index_dirs):
    invoke("mine", index_dirs["hybrid"], "--data", data_dir, "--out", tmp_path / "h", "--top-k", "5",
           "--fusion", "weighted", "--dense-weight", "1.0", "--sparse-depth", "5", "--dense-depth", "5")
    invoke("mine", index_dirs["dense"], "--data", data_dir, "--out", tmp_path / "d", "--top-k", "5")
    h, d = mined(tmp_path / "h"), mined(tmp_path / "d")
    assert summary(tmp_path / "h")["fusion"] == "weighted"
    def same(ids):  # DUP-X has X's text, so the two tie: either may come first
        return {i.removeprefix("DUP-") for i in ids}

    for q, g in d.filter(pl.col("rank") <= 2).group_by("query_id"):  # the dense top 2 lead the fused run
        fused = h.filter((pl.col("query_id") == q[0]) & (pl.col("rank") <= 2))
        assert same(fused["doc_id"]) == same(g["doc_id"])
        assert all("dense" in r for r in fused["retriever"])


def test_per_retriever_depth_bounds_what_each_run_contributes(tmp_path, data_dir, index_dirs):
    invoke("mine", index_dirs["hybrid"], "--data", data_dir, "--out", tmp_path / "h", "--top-k", "10",
           "--sparse-depth", "2", "--dense-depth", "3")
    got = mined(tmp_path / "h").filter(pl.col("rank").is_not_null())
    per_query = got.group_by("query_id").agg(
        pl.col("retriever").str.contains("bm25").sum().alias("bm25"),
        pl.col("retriever").str.contains("dense").sum().alias("dense"),
        pl.len().alias("n"),
    )
    assert per_query["bm25"].max() <= 2 and per_query["dense"].max() <= 3 and per_query["n"].max() <= 5
    assert per_query["dense"].max() == 3


# -- candidate selection -------------------------------------------------------------------------------------------

def test_rank_window_keeps_only_its_ranks_and_every_positive(tmp_path, data_dir, index_dirs):
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "w", "--top-k", "20",
           "--range-min", "2", "--range-max", "8")
    df = mined(tmp_path / "w")
    neg = df.filter(~pl.col("is_positive"))
    assert neg["rank"].min() == 3 and neg["rank"].max() <= 8
    _, _, qrels = read_tiny()
    assert set(df.filter(pl.col("is_positive")).select("query_id", "doc_id").iter_rows()) == {(q, d) for q, d, _ in qrels}
    assert summary(tmp_path / "w")["rank_window"] == [3, 8]


def test_sampling_top_takes_the_best_ranks_of_the_window(tmp_path, data_dir, index_dirs):
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "full", "--top-k", "10")
    invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "top", "--top-k", "10",
           "--range-min", "1", "--sample", "2", "--sampling", "top")
    candidate = ~pl.col("is_positive") & ~pl.col("same_text_as_positive")  # flagged ones are kept, not counted
    full = mined(tmp_path / "full").filter(candidate & (pl.col("rank") > 1))
    expect = full.sort("rank").group_by("query_id", maintain_order=True).head(2)
    top = mined(tmp_path / "top")
    assert top.filter(pl.col("same_text_as_positive")).height == 1
    got = top.filter(candidate)
    assert set(got.select("query_id", "doc_id").iter_rows()) == set(expect.select("query_id", "doc_id").iter_rows())


def test_random_sampling_is_seeded_and_stays_in_the_window(tmp_path, data_dir, index_dirs):
    def run(name, seed):
        invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / name, "--top-k", "15",
               "--range-min", "3", "--sample", "3", "--sampling", "random", "--seed", str(seed))
        neg = mined(tmp_path / name).filter(~pl.col("is_positive") & ~pl.col("same_text_as_positive"))
        assert neg.group_by("query_id").len()["len"].max() <= 3 and neg["rank"].min() > 3
        return set(neg.select("query_id", "doc_id").iter_rows())

    assert run("a", 1) == run("b", 1)
    assert run("c", 1) != run("d", 2)


def test_simans_prefers_candidates_scored_near_the_best_positive():
    from hardneg.stages.mine import select_candidates

    rows = {"query_id": [], "doc_id": [], "rank": [], "retriever": [], "retriever_score": [], "is_positive": [],
            "same_text_as_positive": []}
    for q in range(200):
        for did, rank, s, pos in [("p", None, 10.0, True), ("near", 1, 9.5, False), ("mid", 2, 6.0, False),
                                  ("far", 3, 1.0, False)]:
            for col, v in zip(rows, [f"q{q}", did, rank, "bm25", s, pos, False]):
                rows[col].append(v)
    table = pa.table(rows, schema=schemas.MINED)
    cfg = MineConfig(top_k=3, sample=1, sampling="simans", simans_a=0.2, seed=3)
    chosen = pl.from_arrow(select_candidates(table, cfg)).filter(~pl.col("is_positive"))["doc_id"].value_counts()
    counts = dict(zip(chosen["doc_id"], chosen["count"]))
    assert sum(counts.values()) == 200
    assert counts["near"] > counts.get("mid", 0) > counts.get("far", 0)


# -- positives: same text, graded relevance, several rows, none --------------------------------------------------

def test_normalized_text_ignores_case_punctuation_and_spacing():
    from hardneg.io.data import normalize_text

    got = normalize_text(pa.array(["Vitamin D,  and\tcancer!", "vitamin d and cancer", "vitamin e and cancer"]))
    assert got[0] == got[1] and got[1] != got[2]


def test_text_keys_are_equal_exactly_for_equal_normalized_texts():
    from hardneg.io.data import text_keys

    corpus = pa.table({"doc_id": list("abcd"), "title": ["Vitamin D", None, "", "Vitamin E"],
                       "text": ["and cancer!", "vitamin d AND cancer", "Vitamin D, and cancer", "and cancer"]})
    keys = text_keys(corpus, batch_rows=3).to_pylist()  # two batches
    assert keys[0] == keys[1] == keys[2] != keys[3]


def test_mine_refuses_an_index_without_text_keys(tmp_path, data_dir, index_dirs):
    import pyarrow.parquet as pq

    old = tmp_path / "old-index"
    shutil.copytree(index_dirs["bm25"], old)
    pq.write_table(pq.read_table(old / "doc_ids.parquet", columns=["doc_id"]), old / "doc_ids.parquet")
    manifest = json.loads((old / "_manifest.json").read_text())
    del manifest["files"]  # as an older hardneg wrote it (else the changed file is refused as altered)
    (old / "_manifest.json").write_text(json.dumps(manifest))
    result = invoke("mine", old, "--data", data_dir, "--out", tmp_path / "m", ok=False)
    assert result.exit_code == 2 and "no text_key column" in result.output and "--overwrite" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_a_document_with_the_text_of_a_positive_is_flagged(mined_dir, dup_id):
    df = mined(mined_dir)
    flagged = set(df.filter(pl.col("same_text_as_positive")).select("query_id", "doc_id").iter_rows())
    assert flagged == {dup_id}
    assert not df.filter(pl.col("is_positive"))["same_text_as_positive"].any()
    assert summary(mined_dir)["candidates_same_text_as_positive"] == 1


@pytest.fixture(scope="module")
def graded(tmp_path_factory, tiny_src):
    """The tiny collection with graded qrels: the first query has three positives (relevance 2, 1, 1), the second
    one only relevance-1 rows."""
    src = tmp_path_factory.mktemp("graded") / "src"
    shutil.copytree(tiny_src, src)
    corpus, queries, qrels = read_tiny()
    others = [d["_id"] for d in corpus if d["_id"] not in {x[1] for x in qrels} and not d["_id"].startswith("DUP-")]
    rows = [(q, d, "2" if i != 1 else "1") for i, (q, d, _) in enumerate(qrels)]
    rows += [(qrels[0][0], others[0], "1"), (qrels[0][0], others[1], "1")]
    (src / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
    run = src.parent
    invoke("import", src, "--out", run / "data")
    invoke("index", run / "data", "--out", run / "index")
    return run, rows


def test_all_qrels_rows_of_a_query_are_positives(tmp_path, graded):
    run, rows = graded
    invoke("mine", run / "index", "--data", run / "data", "--out", tmp_path / "m", "--top-k", "5")
    df = mined(tmp_path / "m")
    first = rows[0][0]
    assert set(df.filter((pl.col("query_id") == first) & pl.col("is_positive"))["doc_id"]) == {
        d for q, d, _ in rows if q == first}
    assert summary(tmp_path / "m")["positives"] == len(rows)


def test_min_relevance_keeps_graded_positives_and_reports_queries_left_without_one(tmp_path, graded):
    run, rows = graded
    invoke("mine", run / "index", "--data", run / "data", "--out", tmp_path / "m", "--top-k", "5",
           "--min-relevance", "2")
    df = mined(tmp_path / "m")
    strong = {(q, d) for q, d, r in rows if r == "2"}
    assert set(df.filter(pl.col("is_positive")).select("query_id", "doc_id").iter_rows()) == strong
    weak_only = {q for q, _, _ in rows} - {q for q, _ in strong}
    assert weak_only and not set(df["query_id"]) & weak_only
    s = summary(tmp_path / "m")
    assert s["queries_without_positive_skipped"] == len(weak_only) and s["positives"] == len(strong)
    # the weakly labeled extra documents of the first query are now ordinary candidates, never positives
    extra = {d for q, d, r in rows if q == rows[0][0] and r == "1"}
    assert not df.filter(pl.col("doc_id").is_in(list(extra)) & pl.col("is_positive")).height


def test_an_empty_rank_window_is_refused(tmp_path, data_dir, index_dirs):
    result = invoke("mine", index_dirs["bm25"], "--data", data_dir, "--out", tmp_path / "m", "--top-k", "5",
                    "--range-min", "5", ok=False)
    assert result.exit_code == 2 and "range_min" in result.output and not (tmp_path / "m").exists()


def test_bm25_search_in_memory_bounded_sub_batches_ranks_the_same(index_dirs, data_dir, monkeypatch):
    from hardneg.config import IndexConfig
    from hardneg.io import data
    from hardneg.retrievers import bm25

    queries = data.load(data_dir)["queries"]["text"].to_pylist()
    retriever = bm25.Bm25s(index_dirs["bm25"], IndexConfig())
    one_batch = retriever.search(queries, 10)
    monkeypatch.setattr(bm25, "MAX_POSTINGS", 1)  # every query scored on its own
    alone = retriever.search(queries, 10)
    np.testing.assert_array_equal(one_batch[0], alone[0])
    np.testing.assert_allclose(one_batch[1], alone[1])
    # the scores are bm25s' own
    for i, q in enumerate(bm25.tokenize(queries, "en")):
        ids = retriever.model.get_tokens_ids(q)
        got = one_batch[0][i][one_batch[0][i] >= 0]
        if ids:
            np.testing.assert_allclose(retriever.model.get_scores(ids)[got], one_batch[1][i][: len(got)], rtol=1e-5)


def test_hardest_sampling_in_mine_takes_the_highest_retriever_scores_not_the_best_ranks():
    """mine's `hardest` reads the retriever score; a (hybrid-like) rank that disagrees with it does not decide."""
    from hardneg.stages.mine import select_candidates

    rows = [("p", None, 10.0, True), ("a", 1, 2.0, False), ("b", 2, 9.0, False), ("c", 3, 5.0, False),
            ("d", 4, 8.0, False)]
    cols = ["doc_id", "rank", "retriever_score", "is_positive"]
    table = pa.table({"query_id": ["q"] * len(rows), **{c: list(v) for c, v in zip(cols, zip(*rows))},
                      "retriever": ["hybrid"] * len(rows), "same_text_as_positive": [False] * len(rows)},
                     schema=schemas.MINED)
    kept = {s: set(pl.from_arrow(select_candidates(table, MineConfig(top_k=4, sample=2, sampling=s)))
                   .filter(~pl.col("is_positive"))["doc_id"]) for s in ("top", "hardest")}
    assert kept == {"top": {"a", "b"}, "hardest": {"b", "d"}}
