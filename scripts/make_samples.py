"""Rebuild the bundled samples from a BEIR copy of NFCorpus (run once by maintainers; not used at run time).

    python scripts/make_samples.py --nfcorpus ../shared/data/nfcorpus

data/sample/nfcorpus : 40 test queries with 3-12 relevant documents each, all their test qrels, their relevant
                       documents and, as realistic distractors, each query's BM25 top-15 over the full corpus.
tests/data/tiny      : 8 of those queries, one relevant document each kept as the labeled positive, their BM25
                       top-4 as distractors, and one injected exact duplicate of query 1's positive under a new id
                       (`DUP-<id>`): a known false negative that the filter must drop.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from pathlib import Path

import bm25s


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def write_beir(out: Path, docs: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]], split: str):
    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"_id": d["_id"], "title": d.get("title", ""), "text": d["text"]}) + "\n" for d in docs)
    (out / "corpus.jsonl.gz").write_bytes(gzip.compress(lines.encode(), compresslevel=9, mtime=0))
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n")
    (out / "qrels").mkdir(exist_ok=True)
    with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        w.writerows(qrels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfcorpus", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    corpus = read_jsonl(args.nfcorpus / "corpus.jsonl.gz")
    by_id = {d["_id"]: d for d in corpus}
    queries = {q["_id"]: q for q in read_jsonl(args.nfcorpus / "queries.jsonl.gz")}
    qrels: dict[str, list[tuple[str, int]]] = {}
    with open(args.nfcorpus / "qrels.test.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], []).append((row["corpus-id"], int(row["score"])))
    eligible = sorted(q for q, rel in qrels.items() if 3 <= len(rel) <= 12)
    chosen = sorted(rng.sample(eligible, 40))

    model = bm25s.BM25()
    model.index(bm25s.tokenize([f"{d.get('title', '')} {d['text']}" for d in corpus], stopwords="en"))
    hits, _ = model.retrieve(bm25s.tokenize([queries[q]["text"] for q in chosen], stopwords="en"), k=15)

    doc_ids: list[str] = []
    for qi, q in enumerate(chosen):
        for d, _ in qrels[q]:
            doc_ids.append(d)
        doc_ids.extend(corpus[i]["_id"] for i in hits[qi])
    doc_ids = list(dict.fromkeys(doc_ids))
    write_beir(
        Path("data/sample/nfcorpus"),
        [by_id[d] for d in doc_ids],
        [queries[q] for q in chosen],
        [(q, d, s) for q in chosen for d, s in qrels[q]],
        "test",
    )

    tiny_q = chosen[:8]
    top = {q: [corpus[i]["_id"] for i in hits[qi]] for qi, q in enumerate(chosen)}
    # the labeled positive: the relevant document BM25 ranks best (the first relevant one if none is retrieved)
    tiny_qrels = [
        (q, min((d for d, _ in qrels[q]), key=lambda d: top[q].index(d) if d in top[q] else 99), 1) for q in tiny_q
    ]
    tiny_docs = list(dict.fromkeys([d for _, d, _ in tiny_qrels] + [d for q in tiny_q for d in top[q][:4]]))
    docs = [by_id[d] for d in tiny_docs]
    # duplicate the positive of the first query whose positive BM25 retrieves in its top 4
    pos = by_id[next(d for q, d, _ in tiny_qrels if d in top[q][:4])]
    docs.append({"_id": f"DUP-{pos['_id']}", "title": pos["title"], "text": pos["text"]})
    write_beir(Path("tests/data/tiny"), docs, [queries[q] for q in tiny_q], tiny_qrels, "test")
    print(f"sample: {len(chosen)} queries, {len(doc_ids)} docs; tiny: {len(tiny_q)} queries, {len(docs)} docs")


if __name__ == "__main__":
    main()
