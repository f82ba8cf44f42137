"""Generate a synthetic retrieval collection in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv).

Lengths are log-normal in words (defaults close to MS MARCO passages: median ~50 words, mean ~57, long right
tail; `--median-words 200 --sigma 0.6` is NFCorpus-like); words are drawn from a Zipfian vocabulary
(P(rank r) ~ 1 / r^s) whose most frequent ranks are English stopwords and the rest pronounceable pseudo-words,
so term statistics look like natural text to BM25.
Each query takes 3-8 words of one document (its positive, relevance 2), favouring the document's rarer words;
a fifth of the queries get a second positive (relevance 1) and a tenth a third one. Seeded: same options, same files.

    python bench/gen_corpus.py --docs 1000000 --queries 2000 --out /tmp/synth-1m
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

CHUNK = 50_000


def vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
    codas = ["", "", "", "n", "r", "s", "l", "m", "t", "x"]
    syllables = np.array([o + v + c for o in onsets for v in vowels for c in sorted(set(codas))], dtype=object)
    words: set[str] = set()
    while len(words) < size:
        parts = rng.integers(0, len(syllables), size=(size, 4))
        n = rng.integers(1, 5, size=size)
        for row, k in zip(parts, n):
            words.add("".join(syllables[row[:k]]))
    import bm25s.stopwords

    stop = list(bm25s.stopwords.STOPWORDS_EN)  # the most frequent ranks are English stopwords, as in real text
    out = np.array(sorted(words - set(stop))[: size - len(stop)], dtype=object)
    rng.shuffle(out)  # frequency rank independent of spelling
    return np.concatenate([np.array(stop, dtype=object), out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--median-words", type=float, default=50.0)
    ap.add_argument("--sigma", type=float, default=0.5, help="log-normal sigma of the word count")
    ap.add_argument("--vocab", type=int, default=200_000)
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    vocab = vocabulary(args.vocab, rng)
    cdf = np.cumsum(1.0 / np.arange(1, args.vocab + 1) ** args.zipf)
    cdf /= cdf[-1]
    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    query_docs = np.sort(rng.choice(args.docs, size=args.queries, replace=False))
    query_words: dict[int, list[str]] = {}
    want = set(query_docs.tolist())

    tmp = out / ".corpus.jsonl.tmp"
    with open(tmp, "w") as fh:
        for start in range(0, args.docs, CHUNK):
            n = min(CHUNK, args.docs - start)
            lengths = np.maximum(3, rng.lognormal(np.log(args.median_words), args.sigma, size=n).astype(int))
            title_len = rng.integers(3, 9, size=n)
            ids = np.searchsorted(cdf, rng.random(int(lengths.sum() + title_len.sum())))
            words = vocab[ids]
            pos = 0
            lines = []
            for j in range(n):
                title = " ".join(words[pos : pos + title_len[j]])
                pos += title_len[j]
                body_ids = ids[pos : pos + lengths[j]]
                text = " ".join(words[pos : pos + lengths[j]]).capitalize() + "."
                pos += lengths[j]
                doc = start + j
                if doc in want:  # rarer words are likelier in a query: weight by frequency rank
                    k = min(len(body_ids), int(rng.integers(3, 9)))
                    w = np.log(2.0 + body_ids)
                    pick = rng.choice(len(body_ids), size=k, replace=False, p=w / w.sum())
                    query_words[doc] = [vocab[body_ids[p]] for p in sorted(pick)]
                lines.append(json.dumps({"_id": f"D{doc}", "title": title, "text": text}))
            fh.write("\n".join(lines) + "\n")
    os.replace(tmp, out / "corpus.jsonl")

    with open(out / "queries.jsonl", "w") as fq, open(out / "qrels" / "test.tsv", "w") as fr:
        fr.write("query-id\tcorpus-id\tscore\n")
        for i, doc in enumerate(query_docs.tolist()):
            fq.write(json.dumps({"_id": f"Q{i}", "text": " ".join(query_words[doc])}) + "\n")
            fr.write(f"Q{i}\tD{doc}\t2\n")
            extra = 2 if rng.random() < 0.1 else 1 if rng.random() < 0.2 else 0
            for other in rng.choice(args.docs, size=extra, replace=False).tolist():
                if other != doc:
                    fr.write(f"Q{i}\tD{other}\t1\n")
    print(f"wrote {out}: {args.docs} documents, {args.queries} queries")


if __name__ == "__main__":
    main()
