"""Helpers shared by the benchmark scripts: timing a command, a fresh work directory, the one BEIR reader
(`read_beir`, on hardneg's own readers) and the one BEIR writer (`write_beir`: copies and subsets)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` (in `cwd`, with `env`); return its wall seconds and peak RSS (MiB), from this child's own rusage."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)} (see {log})")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def fresh_workdir(work: Path | None, prefix: str) -> Path:
    """`work` emptied (or a new temporary directory): every benchmark run starts from nothing."""
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix=prefix))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


NFCORPUS = "NFCorpus in BEIR layout, e.g. /work/shared/data/nfcorpus"


def beir_parser(description: str, split: str = "test", data_help: str = "BEIR directory, e.g. "
                "/work/shared/data/nfcorpus", raw: bool = False, slices: bool = False) -> argparse.ArgumentParser:
    """The command line every benchmark on a BEIR directory starts from: --data, --split; `slices`: also
    --max-queries / --max-docs (see `data_slice`); `raw`: the description printed as written."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help=data_help)
    ap.add_argument("--split", default=split)
    if slices:
        ap.add_argument("--max-queries", type=int, default=0, help="bench on a seeded slice: this many queries ...")
        ap.add_argument("--max-docs", type=int, default=0,
                        help="... their positives and other documents up to this many")
    return ap


def data_slice(args, out: Path) -> Path:
    """`args.data`, or (with --max-queries / --max-docs) its seeded slice written into `out` (`subset`)."""
    if not (args.max_queries or args.max_docs):
        return args.data
    return subset(args.data, out, args.split, args.max_queries or 10**9, args.max_docs or 10**9)


def subset(src: Path, out: Path, split: str, max_queries: int, max_docs: int, seed: int = 0) -> Path:
    """A seeded slice in BEIR layout: `max_queries` queries, all their positives, other documents up to `max_docs`."""
    import random

    corpus, queries, pairs = read_beir_pairs(src, split)
    rng = random.Random(seed)
    all_q = sorted({q for q, _ in pairs})
    qids = sorted(rng.sample(all_q, min(max_queries, len(all_q))))
    keep_pairs = [(q, d) for q, d in pairs if q in set(qids)]
    docs = {d for _, d in keep_pairs}
    others = sorted(set(corpus) - docs)
    docs |= set(rng.sample(others, max(0, min(len(others), max_docs - len(docs)))))
    return write_beir(out, split, keep_pairs, corpus={d: t for d, t in corpus.items() if d in docs},
                      queries={q: queries[q] for q in qids})


def read_beir(src: Path, split: str):
    """(corpus {doc_id: "title text"}, queries {query_id: text}, qrels {query_id: {doc_id: relevance}}) of a BEIR
    directory (`corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/<split>.tsv` or `qrels.<split>.tsv`), read with
    hardneg's readers (`hardneg.io.readers`: the files `hardneg import` would read), in file order."""
    from hardneg.errors import HardnegError
    from hardneg.io.readers import find_files, read_table

    try:
        files = find_files(Path(src), split)
        corpus, queries, qrels = (read_table(files[k], k).to_pydict() for k in ("corpus", "queries", "qrels"))
    except HardnegError as exc:
        raise SystemExit(f"{exc}; pass a BEIR directory") from None
    texts = {d: f"{t or ''} {x}".strip() for d, t, x in zip(corpus["doc_id"], corpus["title"], corpus["text"])}
    relevance: dict[str, dict[str, int]] = {}
    for q, d, r in zip(qrels["query_id"], qrels["doc_id"], qrels["relevance"]):
        relevance.setdefault(q, {})[d] = r
    return texts, dict(zip(queries["query_id"], queries["text"])), relevance


def positive_pairs(qrels: dict, min_relevance: int = 1, queries=None, corpus=None) -> list[tuple[str, str]]:
    """(query, document) of every qrels row with relevance >= `min_relevance` (and, given them, whose query and
    document are in `queries` / `corpus`), in qrels order."""
    return [(q, d) for q, docs in qrels.items() for d, r in docs.items()
            if r >= min_relevance and (queries is None or q in queries) and (corpus is None or d in corpus)]


def read_beir_pairs(src: Path, split: str):
    """(corpus, queries, positive (query, document) pairs) of a BEIR directory (`read_beir`, `positive_pairs`)."""
    corpus, queries, qrels = read_beir(src, split)
    return corpus, queries, positive_pairs(qrels, 1, queries, corpus)


def write_beir(out: Path, split: str, qrels, src: Path | None = None, corpus: dict | None = None,
               queries: dict | None = None, extra_qrels: dict | None = None) -> Path:
    """Write the BEIR directory `out`: `qrels/<split>.tsv` from `qrels` ((query, document) rows, relevance 1, or
    (query, document, relevance)); `corpus` / `queries` ({id: text}) as corpus.jsonl / queries.jsonl, or, when None,
    `src`'s files linked; `extra_qrels` {folder: rows} more qrels files (e.g. hidden-qrels/<split>.tsv)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for kind, texts, field in (("corpus", corpus, "text"), ("queries", queries, "text")):
        if texts is None:
            for name in (f"{kind}.jsonl.gz", f"{kind}.jsonl"):
                if src is not None and (Path(src) / name).exists() and not (out / name).exists():
                    (out / name).symlink_to((Path(src) / name).resolve())
        else:
            with open(out / f"{kind}.jsonl", "w") as fh:
                fh.writelines(json.dumps({"_id": i, **({"title": ""} if kind == "corpus" else {}), field: t}) + "\n"
                              for i, t in texts.items())
    for folder, rows in (("qrels", qrels), *(extra_qrels or {}).items()):
        (out / folder).mkdir(exist_ok=True)
        lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, (*row, 1)[:3])) for row in rows]
        (out / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return out
