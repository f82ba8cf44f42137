"""The hidden-positive protocol's pure pieces (bench/protocol.py), on hand-made examples."""

import math
from pathlib import Path

import pytest

from conftest import load_bench

ROOT = Path(__file__).resolve().parent.parent


protocol = load_bench("protocol")
benchutil = load_bench("benchutil")

QRELS = {
    "q1": {"a": 1, "b": 2, "c": 1, "z": 0},
    "q2": {"d": 1},  # one relevant document: not part of the protocol
    "q3": {"e": 2, "f": 1},
    "q4": {"g": 0, "h": 0},  # nothing relevant
}


def test_hiding_keeps_exactly_one_labeled_positive_per_query_with_two_or_more():
    labeled, hidden = protocol.hide_positives(QRELS, seed=0)
    assert set(labeled) == set(hidden) == {"q1", "q3"}
    for q in labeled:
        relevant = {d for d, r in QRELS[q].items() if r > 0}
        assert labeled[q] in relevant
        assert labeled[q] not in hidden[q]
        assert hidden[q] | {labeled[q]} == relevant  # relevance 0 ("z") is never hidden


def test_hiding_is_seeded_and_each_query_independent_of_the_others():
    many = {f"q{i}": {f"d{i}-{j}": 1 for j in range(6)} for i in range(40)}
    first = protocol.hide_positives(many, seed=0)
    assert protocol.hide_positives(many, seed=0) == first
    assert protocol.hide_positives(many, seed=1)[0] != first[0]
    fewer = {q: many[q] for q in list(many)[:10]}
    assert protocol.hide_positives(fewer, seed=0)[0] == {q: first[0][q] for q in fewer}


def test_expand_duplicates_adds_text_copies_but_not_the_labeled_document():
    corpus = {"a": "same", "a2": "same", "b": "other", "lab": "label text", "lab2": "label text"}
    out = protocol.expand_duplicates({"q": {"a", "lab"}}, corpus, {"q": "lab"})
    assert out == {"q": {"a", "a2", "lab2"}}


def test_negative_metrics_on_a_hand_made_example():
    hidden = {"q1": {"h1", "h2"}, "q2": {"h3"}, "q3": {"h4"}}
    negatives = {"q1": ["h1", "n1", "h2", "n2"], "q2": ["n3", "n4"], "q9": ["h1"]}  # q3 gets none; q9 not in protocol
    m = protocol.negative_metrics(negatives, hidden, requested=4)
    assert m["negatives"] == 6
    assert m["false_negatives"] == 2
    assert m["fn_rate"] == pytest.approx(2 / 6)
    assert m["queries_with_fn"] == pytest.approx(1 / 3)
    assert m["negatives_per_query"] == pytest.approx(2.0)
    assert m["yield"] == pytest.approx(0.5)


def test_recovery_metrics_on_a_hand_made_example():
    hidden = {"q1": {"h1", "h2", "h3"}, "q2": {"h4"}}
    candidates = {"q1": {"h1", "h2", "n1"}, "q2": {"n2"}}  # h3 and h4 were never retrieved
    promoted = {"q1": {"h1", "n1"}, "q2": set()}
    m = protocol.recovery_metrics(promoted, candidates, hidden)
    assert m["promoted"] == 2 and m["promoted_hidden"] == 1
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 2)  # 1 of the 2 hidden positives among the candidates
    assert m["recall_all"] == pytest.approx(1 / 4)
    assert protocol.recovery_metrics({}, candidates, hidden)["precision"] is None


def test_ndcg_and_recall_on_a_hand_made_example():
    qrels = {"q1": {"a": 2, "b": 1, "c": 1}, "q2": {"x": 1}, "q3": {"y": 0}}
    run = {"q1": ["b", "n", "a"], "q2": ["n1", "n2"]}
    m = protocol.ndcg_recall(run, qrels, k_ndcg=2, k_recall=3)
    dcg = 1 / math.log2(2)  # b at rank 1, a at rank 3 is beyond k=2
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((dcg / idcg + 0.0) / 2)  # q3 has nothing relevant: not counted
    assert m["recall@3"] == pytest.approx((2 / 3 + 0.0) / 2)
    perfect = protocol.ndcg_recall({"q1": ["a", "b", "c"]}, {"q1": qrels["q1"]}, k_ndcg=10, k_recall=100)
    assert perfect == {"ndcg@10": pytest.approx(1.0), "recall@100": pytest.approx(1.0)}


def test_hidden_copy_round_trips_through_the_beir_reader(tmp_path):
    src = ROOT / "data" / "sample" / "nfcorpus"  # several relevant documents per query
    corpus, queries, qrels = benchutil.read_beir(src, "test")
    labeled, hidden = protocol.hide_positives(qrels, seed=3)
    assert labeled
    hp = load_bench("hidden_positive")
    copy = hp.write_hidden_copy(src, tmp_path / "copy", "test", labeled, hidden)
    corpus2, queries2, labeled_qrels = benchutil.read_beir(copy, "test")
    assert corpus2 == corpus and queries2 == queries
    assert {q: set(d) for q, d in labeled_qrels.items()} == {q: {d} for q, d in labeled.items()}
    hidden_rows = (copy / "hidden-qrels" / "test.tsv").read_text().splitlines()[1:]
    assert {tuple(r.split("\t")[:2]) for r in hidden_rows} == {(q, d) for q in hidden for d in hidden[q]}


def test_a_seeded_subset_keeps_its_queries_positives_and_reads_back(tmp_path):
    src = ROOT / "data" / "sample" / "nfcorpus"
    corpus, queries, pairs = benchutil.read_beir_pairs(src, "test")
    out = benchutil.subset(src, tmp_path / "slice", "test", max_queries=3, max_docs=40)
    corpus2, queries2, pairs2 = benchutil.read_beir_pairs(out, "test")
    assert len(queries2) == 3 and set(pairs2) == {(q, d) for q, d in pairs if q in queries2}
    assert len(corpus2) == max(40, len({d for _, d in pairs2})) and {d for _, d in pairs2} <= set(corpus2)
    assert all(corpus2[d] == corpus[d] and queries2[q] == queries[q] for d in corpus2 for q in queries2)
    assert benchutil.subset(src, tmp_path / "again", "test", 3, 40) and \
        (tmp_path / "again" / "corpus.jsonl").read_bytes() == (out / "corpus.jsonl").read_bytes()  # seeded


class _Truth:
    """What bench/hidden_positive.py's Truth holds, for two queries in text space."""
    qid = {"query one": "q1", "query two": "q2"}
    labeled_text = {"q1": "P1", "q2": "P2"}
    relevant_text = {"q1": {"P1", "H1"}, "q2": {"P2"}}
    queries = ["q1", "q2"]


def test_the_judge_counts_wrong_negatives_and_wrong_positives_of_a_training_file():
    hp = load_bench("hidden_positive")
    rows = [("query one", "P1", ["H1"]), ("query one", "P1", ["N1"]),   # H1 is a hidden positive: a false negative
            ("query one", "X", ["N1"]),                                    # a promoted positive that is wrong
            ("query one", "H1", ["N1"]),                                   # a promoted positive that is right
            ("query two", "P2", ["N2"]), ("query two", "P2", ["N3"])]
    m = hp.judge(_Truth(), rows, requested=2)
    assert (m["negatives"], m["false_negatives"]) == (4, 1)            # distinct: q1 {H1, N1}, q2 {N2, N3}
    assert m["fn_rate"] == 0.25 and m["queries_with_fn"] == 0.5 and m["yield"] == 1.0
    assert m["positive_pairs"] == 4 and m["positive_precision"] == 0.75   # P1, X, H1, P2: X is wrong
    assert (m["promoted_pairs"], m["promoted_precision"]) == (2, 0.5)
    assert m["training_rows"] == 6 and m["wrong_positive_rows"] == 1 / 6


def test_training_rows_read_every_export_format(tmp_path):
    import polars as pl

    hp = load_bench("hidden_positive")
    pl.DataFrame({"anchor": ["q"], "positive": ["p"], "negative_1": ["a"], "negative_2": ["b"]}).write_parquet(
        tmp_path / "n.parquet")
    assert hp.training_rows(tmp_path / "n.parquet", "n-tuple") == [("q", "p", ["a", "b"])]
    pl.DataFrame({"query": ["q", "q"], "document": ["p", "a"], "label": [1.0, 0.0]}).write_parquet(
        tmp_path / "l.parquet")
    assert hp.training_rows(tmp_path / "l.parquet", "labeled") == [("q", "p", []), ("q", None, ["a"])]
    pl.DataFrame({"query": ["q"], "pos": [["p1", "p2"]], "neg": [["a"]]}).write_ndjson(tmp_path / "f.jsonl")
    assert hp.training_rows(tmp_path / "f.jsonl", "flagembedding") == [("q", "p1", ["a"]), ("q", "p2", ["a"])]


def test_promotion_curves_trade_precision_for_recall():
    hp = load_bench("hidden_positive")

    def r(q, d, s, rank, pos=False):
        return {"query_id": q, "doc_id": d, "teacher_score": s, "rank": rank, "is_positive": pos}

    scored = [r("q1", "p", 0.5, 3, True), r("q1", "h", 0.6, 1), r("q1", "n", 0.55, 2), r("q1", "m", 0.3, 20),
              r("q2", "p2", 0.4, 1, True), r("q2", "h2", 0.35, 15)]
    relevant = {"q1": {"p", "h"}, "q2": {"p2", "h2"}}
    curve = {p["threshold"]: p for p in hp.promotion_curve(scored, relevant, "teacher", [-0.1, 0.0, 0.08])}
    assert curve[0.08]["promoted"] == 1 and curve[0.08]["precision"] == 1.0 and curve[0.08]["recall"] == 0.5
    assert curve[0.0]["promoted"] == 2 and curve[0.0]["precision"] == 0.5
    assert curve[-0.1]["promoted"] == 3 and curve[-0.1]["recall"] == 1.0
    ranked = hp.promotion_curve(scored, relevant, "teacher+rank10", [-0.1])[0]
    assert ranked["promoted"] == 2 and ranked["recall"] == 0.5           # h2 is ranked 15th
    top1 = hp.promotion_curve(scored, relevant, "top1", [-0.1])[0]
    assert top1["promoted"] == 2 and top1["precision"] == 1.0           # h for q1, h2 for q2
