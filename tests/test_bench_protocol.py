"""The hidden-positive protocol's pure pieces (bench/protocol.py), on hand-made examples."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


protocol = _load("protocol")

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
    corpus, queries, qrels = protocol.read_beir(src, "test")
    labeled, hidden = protocol.hide_positives(qrels, seed=3)
    assert labeled
    hp = _load("hidden_positive")
    copy = hp.write_hidden_copy(src, tmp_path / "copy", "test", labeled, hidden)
    corpus2, queries2, labeled_qrels = protocol.read_beir(copy, "test")
    assert corpus2 == corpus and queries2 == queries
    assert {q: set(d) for q, d in labeled_qrels.items()} == {q: {d} for q, d in labeled.items()}
    hidden_rows = (copy / "hidden-qrels" / "test.tsv").read_text().splitlines()[1:]
    assert {tuple(r.split("\t")[:2]) for r in hidden_rows} == {(q, d) for q in hidden for d in hidden[q]}


def test_kept_rows_of_an_earlier_run_stay_marked_and_rerun_rows_replace_them(tmp_path):
    import argparse
    import json

    hp = _load("hidden_positive")

    def row(name, fn):
        return {"configuration": name, "note": "", "wall_seconds": 1.0, "fn_rate": fn, "queries_with_fn": 0.1,
                "negatives_per_query": 5.0, "yield": 1.0, "score_vs_positive": 0.5, "mean_rank": 9.0}

    earlier = {"command": "python bench/hidden_positive.py --old", "split": "test", "seed": 0, "max_seq_length": 64,
               "negatives_requested": 5, "rows": [row("naive dense top-5", 0.3), row("ST x", 0.2),
                                                  row("hardneg a (configs/a.toml)", 0.1)]}
    (tmp_path / "old.json").write_text(json.dumps(earlier))
    args = argparse.Namespace(split="test", seed=0, max_seq_length=64, negatives=5, out=tmp_path / "out",
                              data=Path("nfcorpus"), ce_steps=1, ce_max_length=8, ce_queries=1,
                              run={"command": "python bench/hidden_positive.py --new", "started": "now",
                                   "load_average": [1.0, 1.0, 1.0]})
    args.earlier = hp.earlier_rows(tmp_path / "old.json", args)
    hp.save([row("naive dense top-5", 0.31), row("hardneg b (configs/b.toml)", 0.05)], args, [], 300)
    out = json.loads((tmp_path / "out" / "hidden_positive.json").read_text())
    got = {r["configuration"]: (r["run"], r["fn_rate"]) for r in out["rows"]}
    assert got == {"naive dense top-5": (2, 0.31), "ST x": (1, 0.2), "hardneg a (configs/a.toml)": (1, 0.1),
                   "hardneg b (configs/b.toml)": (2, 0.05)}
    assert [r["id"] for r in out["runs"]] == [1, 2] and out["runs"][0]["command"].endswith("--old")
    table = (tmp_path / "out" / "hidden_positive.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "Run 1: `python bench/hidden_positive.py --old`" in table

    args.max_seq_length = 128
    with pytest.raises(SystemExit, match="max_seq_length"):
        hp.earlier_rows(tmp_path / "old.json", args)
