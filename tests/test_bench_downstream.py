"""bench/downstream.py's pure pieces: the training batches, the training file's judge, the table's verdicts."""

import random
import types
from pathlib import Path

import numpy as np

from conftest import load_bench

ROOT = Path(__file__).resolve().parent.parent


downstream = load_bench("downstream")


def test_batches_visit_every_query_once_per_epoch_and_never_twice_in_a_batch():
    qids = [f"q{i}" for i in range(10)]
    out = list(downstream.batches(qids, steps=9, batch_size=4, rng=random.Random(3)))
    assert len(out) == 9 and all(len(b) == 4 for b in out)
    assert all(len(set(b)) == len(b) for b in out)
    flat = [q for b in out for q in b]
    assert sorted(flat[:8]) == sorted(set(flat[:8]))  # the first two batches: eight distinct queries of epoch 1
    # over 36 draws from 10 queries every query comes 3 or 4 times: no query is starved or dominates
    counts = {q: flat.count(q) for q in qids}
    assert set(counts.values()) <= {3, 4}, counts
    # seeded: the same rng seed gives the same batches, another seed another order
    assert out == list(downstream.batches(qids, 9, 4, random.Random(3)))
    assert out != list(downstream.batches(qids, 9, 4, random.Random(4)))


def _dataset(tmp_path):
    """Three documents relevant to q1 by the full train qrels (d1 labeled, d2 hidden, d5 a text twin of d2)."""
    corpus = {"d1": "alpha", "d2": "beta", "d3": "gamma", "d4": "delta", "d5": "beta"}
    ds = types.SimpleNamespace(
        name="toy", corpus=corpus, doc_ids=list(corpus), cache=tmp_path / "downstream" / "toy",
        train_qrels={"q1": {"d1": 1, "d2": 2}, "q2": {"d3": 1}},
        labeled={"q1": "d1", "q2": "d3"},
        by_text={"alpha": ["d1"], "beta": ["d2", "d5"], "gamma": ["d3"], "delta": ["d4"]},
    )
    ds.relevant_train = lambda q: downstream.Dataset.relevant_train(ds, q)
    # base embeddings: 2-d unit vectors; q1 ranks d1 > d2 > d5 > d4 > d3, q2 ranks d3 first then d4
    docs = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    docs[4] *= 0.99  # the twin ranks just below d2
    queries = np.array([[1, 0], [0, 1]], dtype=np.float32)
    (tmp_path / "base-emb").mkdir()
    np.savez(tmp_path / "base-emb" / "toy-len64.npz", docs=docs, queries=queries)
    return ds


def test_file_metrics_counts_hidden_positives_their_twins_and_wrong_positives(tmp_path):
    ds = _dataset(tmp_path)
    args = types.SimpleNamespace(max_seq_length=64)
    rows = {
        "q1": [["d1", "d2"], ["d1", "d5"], ["d1", "d4"]],  # d2 hidden positive, d5 its text twin, d4 a true negative
        "q2": [["d3", "d4"], ["d1", "d4"]],  # d1 is a promoted positive that is not relevant to q2
    }
    m = downstream.file_metrics(rows, ds, args)
    assert m["rows"] == 5 and m["queries"] == 2 and m["train_queries"] == 2
    assert m["negatives"] == 4  # distinct (query, negative): (q1,d2) (q1,d5) (q1,d4) (q2,d4)
    assert m["false_negatives"] == 2 and m["fn_rate"] == 0.5
    assert m["queries_with_fn"] == 0.5
    assert m["wrong_positives"] == 1 and m["rows_with_wrong_positive"] == 1 / 5
    # ranks by the base model: q1: d2 2, d5 3, d4 4; q2: d4 2 -> median 2.5
    assert m["median_rank"] == 2.5


def test_in_batch_file_has_no_negatives_to_judge(tmp_path):
    ds = _dataset(tmp_path)
    m = downstream.file_metrics({"q1": [["d1"]], "q2": [["d3"]]}, ds, types.SimpleNamespace(max_seq_length=64))
    assert m["negatives"] == 0 and m["fn_rate"] is None and m["wrong_positives"] == 0


def _run(row, seed, ndcg):
    return {"dataset": "toy", "row": row, "seed": seed, "ndcg_at_10": ndcg, "recall_at_100": 0.5,
            "train_seconds": 1.0, "seconds": 2.0}


def test_table_calls_a_lead_a_win_only_beyond_the_seeds_spread():
    doc = {"command": "python bench/downstream.py", "settings": {"steps": 1, "batch_size": 2, "lr": 1e-5,
                                                                 "max_seq_length": 64},
           "files": [],
           "runs": [_run("base", None, 0.30),
                    _run("in-batch", 0, 0.31), _run("in-batch", 1, 0.33), _run("in-batch", 2, 0.35),
                    _run("naive", 0, 0.34), _run("naive", 1, 0.345), _run("naive", 2, 0.35)]}
    text = downstream.markdown(doc)
    assert "| in-batch | 3 | 0.3300 ± 0.0200 |" in text
    assert "+3.00 vs base (beyond spread)" in text  # 3 points against a 2-point spread
    assert "+4.50 vs base (beyond spread)" in text
    assert "Best trained row: naive (0.3450), 1.50 points ahead of in-batch: within the seeds' spread" in text
    doc["runs"] = [r if r["row"] != "in-batch" else {**r, "ndcg_at_10": 0.30 + r["seed"] * 0.001}
                   for r in doc["runs"]]
    text = downstream.markdown(doc)
    assert "+0.10 vs base (within spread)" in text
    assert ": beyond the seeds' spread" in text
    doc["runs"] = [r for r in doc["runs"] if r["row"] != "naive" or r["seed"] == 0]
    assert "| naive | 1 | **0.3400 ± 0.0000** |" in downstream.markdown(doc)  # the best mean, in bold
    assert "+4.00 (one seed: no spread yet)" in downstream.markdown(doc)


def _tiny_train_split(tmp_path, tiny_src, monkeypatch):
    """The tiny collection as a BEIR data set whose train split is its test qrels, and the downstream settings."""
    src = tmp_path / "tiny"
    (src / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl.gz", "queries.jsonl"):
        (src / name).symlink_to(tiny_src / name)
    for split in ("train", "test"):
        (src / "qrels" / f"{split}.tsv").write_text((tiny_src / "qrels" / "test.tsv").read_text())
    monkeypatch.setattr(downstream, "SCORE_REUSE", True)
    return downstream.Dataset(src, tmp_path / "cache" / "downstream", quick=False), \
        types.SimpleNamespace(max_seq_length=64)


def test_a_hardneg_row_trains_on_the_exported_triplets_of_the_config_run_as_shipped(tmp_path, tiny_src, monkeypatch):
    """The tiny collection as a train split: hardneg runs configs/bm25-fast.toml on the hidden-positive copy, and the
    training file is its exported triplets mapped back to ids: labeled positives only (the config drops suspects),
    never the labeled positive as a negative, as many rows as the export wrote."""
    import json

    ds, args = _tiny_train_split(tmp_path, tiny_src, monkeypatch)
    f = downstream.training_file("hardneg-bm25-fast", ds, args)
    rows = f["rows"]
    assert rows and set(rows) <= set(ds.labeled)
    assert all(p == ds.labeled[q] and n != p and n in ds.corpus for q, rs in rows.items() for p, n in rs)
    run = tmp_path / "cache" / "downstream" / "tiny" / "hardneg" / "bm25-fast"
    manifest = json.loads((run / "train.parquet.manifest.json").read_text())
    assert sum(map(len, rows.values())) == manifest["summary"]["rows"]
    m = f["metrics"]
    assert m["rows"] == manifest["summary"]["rows"] and m["wrong_positives"] == 0
    assert 0 <= m["fn_rate"] <= 1 and m["median_rank"] >= 2
    # cached under a key of the config file's content
    key = downstream.file_key("hardneg-bm25-fast")
    assert (ds.cache / "files" / f"hardneg-bm25-fast-{key}.json").exists()


def test_a_config_that_exports_another_format_trains_on_its_relabeled_stage_as_triplets(tmp_path, tiny_src,
                                                                                      monkeypatch):
    """configs/rlhn-relabel.toml writes FlagEmbedding JSONL (as shipped); the row trains on the same relabeled stage
    exported as triplets with every positive, the promoted ones too."""
    import polars as pl

    ds, args = _tiny_train_split(tmp_path, tiny_src, monkeypatch)
    rows = downstream.training_file("hardneg-rlhn-relabel", ds, args)["rows"]
    run = tmp_path / "cache" / "downstream" / "tiny" / "hardneg" / "rlhn-relabel"
    assert (run / "train.jsonl").exists()
    relabeled = pl.read_parquet(list((run / "relabeled").glob("part-*.parquet")))
    positives = set(relabeled.filter(pl.col("label") == "positive").select("query_id", "doc_id").iter_rows())
    assert rows and all((q, p) in positives and n != p for q, rs in rows.items() for p, n in rs)
    promoted = {(q, d) for q, d in positives if d != ds.labeled.get(q)}
    assert promoted and promoted & {(q, p) for q, rs in rows.items() for p, _ in rs}  # promoted positives train too
    assert sum(map(len, rows.values())) == pl.read_parquet(run / "train-as-triplets.parquet").height


def _flat(cfg) -> dict:
    from hardneg.config import asdict

    return {(section, key): value for section, table in asdict(cfg).items() if table
            for key, value in table.items()}


def test_the_default_variants_differ_from_their_default_only_in_their_named_knob():
    """bench/configs/default-*.toml are 'the default, but ...' (default-v1-*: 'the previous default, but ...'): an edit
    of a default that is not carried over to its variants would make the downstream rows compare two things at once."""
    from hardneg.config import load_pipeline

    window = {("filter", "rules"), ("filter", "rank_max"), ("filter", "max_positive_rank")}
    allowed = {"default": {**{f"default-window{w}": window for w in (20, 30, 50)},
                           "default-consistency10": {("filter", "max_positive_rank")},
                           "default-all-queries": {("filter", "rules"), ("filter", "max_positive_rank")}},
               "default-v1": {"default-v1-simans": {("filter", "sampling"), ("filter", "simans_a"),
                                                    ("filter", "simans_b"), ("filter", "seed")},
                              "default-v1-top100": {("mine", "top_k")},
                              "default-v1-window30": {("filter", "rules"), ("filter", "rank_max")}}}
    assert {p.stem for p in (ROOT / "bench" / "configs").glob("default-*.toml")} >= {
        name for variants in allowed.values() for name in variants}
    references = {base: _flat(load_pipeline(ROOT / ("configs" if base == "default" else "bench/configs")
                                            / f"{base}.toml")) for base in allowed}
    for base, variants in allowed.items():
        reference = references[base]
        for name, knobs in variants.items():
            variant = _flat(load_pipeline(ROOT / "bench" / "configs" / f"{name}.toml"))
            differ = {k for k in reference if reference[k] != variant[k]}
            assert differ and differ <= knobs, (name, differ - knobs)
    # the previous default differs from today's in what bench/downstream.py chose: sampling and the consistency rule
    assert {k for k, v in references["default-v1"].items() if references["default"][k] != v} == {
        ("filter", "rules"), ("filter", "max_positive_rank"), ("filter", "sampling")}


def test_steps_per_data_set():
    args = types.SimpleNamespace(steps=downstream.parse_steps(["40", "nfcorpus=80"]))
    assert downstream.steps_of(args, "nfcorpus") == 80 and downstream.steps_of(args, "scifact") == 40
    assert downstream.steps_of(types.SimpleNamespace(steps=5), "scifact") == 5


def test_a_row_whose_training_file_has_the_same_rows_as_an_evaluated_one_reuses_its_evaluations(tmp_path,
                                                                                              monkeypatch):
    """A bench variant promoted to the default trains on the very same rows: its evaluations are not redone."""
    cache = tmp_path / "toy"
    ds = types.SimpleNamespace(name="toy", cache=cache)
    args = types.SimpleNamespace(steps=40, batch_size=32, lr=2e-5, max_seq_length=64, quick=False)
    same, other = {"q1": [["d1", "d2"]]}, {"q1": [["d1", "d3"]]}
    files = {"hardneg-a": {"row": "hardneg-a", "key": "ka", "rows": same},
             "hardneg-b": {"row": "hardneg-b", "key": "kb", "rows": same},
             "hardneg-c": {"row": "hardneg-c", "key": "kc", "rows": other}}
    (cache / "files").mkdir(parents=True)
    for f in files.values():
        (cache / "files" / f"{f['row']}-{f['key']}.json").write_text(downstream.json.dumps(f))
    monkeypatch.setattr(downstream, "file_key", lambda row: files[row]["key"])
    monkeypatch.setattr(downstream, "training_file", lambda row, ds, args: files[row])
    path, settings = downstream.eval_path("hardneg-a", 0, cache, args)
    path.parent.mkdir(parents=True)
    path.write_text(downstream.json.dumps({**_run("hardneg-a", 0, 0.61), "settings": settings}))

    def no_training(*a, **k):
        raise RuntimeError("trained")

    monkeypatch.setattr(downstream, "load_model", no_training)
    got = downstream.model_eval("hardneg-b", 0, ds, args)
    assert got["row"] == "hardneg-b" and got["ndcg_at_10"] == 0.61 and got["same_rows_as"] == "hardneg-a"
    assert downstream.eval_path("hardneg-b", 0, cache, args)[0].exists()  # cached under its own name now
    for row, seed in (("hardneg-c", 0), ("hardneg-b", 1)):  # other rows, or a seed not evaluated: trained
        try:
            downstream.model_eval(row, seed, ds, args)
            raise AssertionError(f"{row} seed {seed} reused an evaluation")
        except RuntimeError as e:
            assert str(e) == "trained"


def test_the_bare_command_runs_the_protocol_of_the_committed_results():
    """`python bench/downstream.py --data-root DIR` (the core run) trains with the very settings the committed table
    was made with, on its core rows: no flag to remember for a rerun to reproduce it."""
    import json

    committed = json.loads((ROOT / "bench" / "results" / "downstream.json").read_text())
    args = downstream.parser().parse_args(["--data-root", "somewhere"])
    args.steps = downstream.parse_steps(args.steps)
    settings = downstream.training_settings(args)
    assert {k: v for k, v in committed["settings"].items() if k in settings} == settings
    assert args.rows == downstream.PRIORITY and args.seeds == [0, 1, 2]
    trained = {r["row"] for r in committed["runs"] if r["seed"] is not None}
    assert set(downstream.PRIORITY) - {"base"} <= trained
