"""The hidden-positive protocol's pure pieces, shared by bench/hidden_positive.py and bench/downstream.py.

For each query with >= `min_relevant` relevant documents, one of them (a seeded choice) stays labeled and the others
are hidden; a configuration sees only the labeled positive, so a negative it emits that is a hidden positive is a
false negative. Everything here is plain Python over dicts of ids, tested in tests/test_bench_protocol.py.
"""

from __future__ import annotations

import math
import random


def hide_positives(qrels: dict[str, dict[str, int]], seed: int, min_relevant: int = 2):
    """Keep one relevant document per query (seeded, independent of the other queries), hide the rest.

    Only queries with >= `min_relevant` relevant documents (relevance > 0) take part.
    Returns ({query_id: labeled doc_id}, {query_id: set of hidden doc_ids}).
    """
    labeled, hidden = {}, {}
    for qid in sorted(qrels):
        relevant = sorted(d for d, r in qrels[qid].items() if r > 0)
        if len(relevant) < min_relevant:
            continue
        keep = random.Random(f"{seed}:{qid}").choice(relevant)
        labeled[qid] = keep
        hidden[qid] = set(relevant) - {keep}
    return labeled, hidden


def expand_duplicates(relevant: dict[str, set[str]], corpus: dict[str, str], exclude: dict[str, str]):
    """Add to each query's set every document whose text is identical to one in it (except `exclude[qid]`).

    NFCorpus holds exact duplicates under different ids; a copy of a relevant document is relevant too.
    """
    by_text: dict[str, list[str]] = {}
    for did, text in corpus.items():
        by_text.setdefault(text, []).append(did)
    out = {}
    for qid, docs in relevant.items():
        grown = {twin for d in docs for twin in by_text.get(corpus.get(d), [d])}
        out[qid] = grown - {exclude.get(qid)}
    return out


def negative_metrics(negatives: dict[str, list[str]], hidden: dict[str, set[str]], requested: int) -> dict:
    """False negatives among emitted negatives, over the protocol's queries (the keys of `hidden`).

    fn_rate: hidden positives among all emitted negatives; queries_with_fn: share of queries with >= 1;
    negatives_per_query: emitted negatives / queries; yield: that / requested.
    """
    n_queries = len(hidden)
    emitted = sum(len(negatives.get(q, [])) for q in hidden)
    fns = [sum(d in hidden[q] for d in negatives.get(q, [])) for q in hidden]
    per_query = emitted / n_queries if n_queries else 0.0
    return {
        "queries": n_queries,
        "negatives": emitted,
        "false_negatives": sum(fns),
        "fn_rate": sum(fns) / emitted if emitted else 0.0,
        "queries_with_fn": sum(f > 0 for f in fns) / n_queries if n_queries else 0.0,
        "negatives_per_query": per_query,
        "yield": per_query / requested if requested else 0.0,
    }


def recovery_metrics(promoted: dict[str, set[str]], candidates: dict[str, set[str]], hidden: dict[str, set[str]]):
    """How well relabeling recovers hidden positives.

    precision = promoted documents that are hidden positives / promoted documents;
    recall = promoted hidden positives / hidden positives among the mined candidates (the ones relabel could see);
    recall_all = promoted hidden positives / all hidden positives.
    """
    qs = list(hidden)
    n_promoted = sum(len(promoted.get(q, ())) for q in qs)
    hits = sum(len(promoted.get(q, set()) & hidden[q]) for q in qs)
    reachable = sum(len(candidates.get(q, set()) & hidden[q]) for q in qs)
    total = sum(len(hidden[q]) for q in qs)
    return {
        "promoted": n_promoted,
        "promoted_hidden": hits,
        "hidden_in_candidates": reachable,
        "precision": hits / n_promoted if n_promoted else None,
        "recall": hits / reachable if reachable else None,
        "recall_all": hits / total if total else None,
    }


def ndcg_recall(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k_ndcg: int = 10, k_recall: int = 100):
    """Mean nDCG@k (graded gains, log2 discount, as trec_eval) and Recall@k over the queries of `qrels` that have a
    relevant document; a query missing from `run` scores 0."""
    ndcgs, recalls = [], []
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        if not relevant:
            continue
        ranked = run.get(qid, [])
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k_ndcg]) if rels.get(d, 0) > 0)
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k_ndcg]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        ndcgs.append(dcg / idcg)
        recalls.append(len(relevant & set(ranked[:k_recall])) / len(relevant))
    n = len(ndcgs)
    return {"ndcg@%d" % k_ndcg: sum(ndcgs) / n if n else 0.0, "recall@%d" % k_recall: sum(recalls) / n if n else 0.0}
