"""`import`: read a source and write validated corpus, queries and qrels Parquet.

Sources (`shape` in the manifest's config):

* `files`: a folder of corpus / queries / qrels files (BEIR, JSONL, TSV, CSV, Parquet, HF sharded Parquet, MS MARCO),
  or explicit `--corpus F --queries F --qrels F` (any of them replacing the one found in the folder);
* `pairs`: a sentence-transformers pairs / triplets file, FlagEmbedding JSONL (`query, pos, neg`), a
  `datasets.save_to_disk` folder of either, or a Hub name (`--allow-download`); plus an optional extra corpus
  (`--corpus F`, a pool of texts or a corpus file). Ids are stable hashes of the texts (`q-`/`d-` + 16 hex digits of
  blake2b), so the same text is one query / one document wherever it occurs; every positive of a query is a qrel
  (relevance 1). Negatives in the file (`neg`, `negative`, `negative_1..n`) join the corpus with
  `flag_negatives = "keep"` (the retriever then finds them if they are hard, and they are scored and filtered like
  any candidate) and are left out with `"ignore"`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from hardneg import schemas
from hardneg.config import ImportConfig, asdict
from hardneg.errors import HardnegError
from hardneg.io import data, readers
from hardneg.io.stagedir import StageWriter, file_sha256


def source_fingerprints(files: dict[str, Path]) -> dict[str, dict]:
    """Size, mtime and sha256 of each source file (a directory: of its files, sha256 over their names and digests),
    recorded in the data manifest so that `hardneg run` notices a source edited in place."""
    out = {}
    for kind, path in files.items():
        path = Path(path)
        if "*" in path.name:  # a sharded layout's pattern (corpus/*.parquet): its files, like a directory's
            members = sorted(p for p in path.parent.glob(path.name) if p.is_file())
            path = path.parent
        else:
            members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats = [p.stat() for p in members]
        if path.is_dir():
            import hashlib

            h = hashlib.sha256()
            for p in members:
                h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
            digest = h.hexdigest()
        else:
            digest = file_sha256(path)
        out[kind] = {"path": str(path.resolve()), "bytes": sum(s.st_size for s in stats),
                     "mtime_ns": max((s.st_mtime_ns for s in stats), default=0), "sha256": digest}
    return out


def source_changed(src: Path, cfg: ImportConfig, manifest: dict) -> str | None:
    """Why a finished import of `src` is no longer current (another split, a source file added, removed or with
    other content), or None. A file with its recorded size and mtime is taken as unchanged; otherwise its sha256
    decides (a touched but unchanged file is still current). The source's path does not matter."""
    old = manifest.get("config", {})
    if old.get("split") != cfg.split:
        return f"the data was imported with split {old.get('split')!r}, not {cfg.split!r}"
    recorded = manifest.get("sources")
    if old.get("shape") == "hub":
        return None  # a hub dataset by name: nothing local to fingerprint
    files = {kind: Path(p) for kind, p in resolved_config(src, cfg)["files"].items()}
    if recorded is None:  # an import by an older hardneg: by paths
        return None if old == resolved_config(src, cfg) else f"{src}: other source files than the import's"
    if sorted(recorded) != sorted(files):
        return f"{src}: has other kinds of source files ({', '.join(sorted(files))}) than were imported"
    for kind, path in files.items():
        rec = recorded[kind]
        path = Path(path)
        if path.is_file():
            st = path.stat()
            if st.st_size == rec["bytes"] and st.st_mtime_ns == rec["mtime_ns"]:
                continue
        if source_fingerprints({kind: path})[kind]["sha256"] != rec["sha256"]:
            return f"{path}: changed since it was imported (its content differs)"
    return None


def text_id(prefix: str, text: str) -> str:
    """The stable id of a pair-derived query (`q-`) or document (`d-`): 16 hex digits of blake2b of the text."""
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def shape_of(src: Path | str | None, cfg: ImportConfig, explicit: dict | None = None) -> str:
    """'files' (a folder of corpus/queries/qrels, or explicit files), 'pairs' (a file or saved dataset), 'hub'."""
    explicit = explicit or {}
    if src is None:
        return "files"
    p = Path(src)
    if p.is_file() or readers.is_saved_dataset(p):
        if explicit.get("queries") or explicit.get("qrels"):
            raise HardnegError(f"{src}: a pairs file brings its own queries and qrels; --queries and --qrels go with "
                               f"a folder or alone")
        return "pairs"
    if p.is_dir():
        return "files"
    if cfg.allow_download:
        return "hub"
    raise HardnegError(f"{src}: no such file or folder (to load a Hugging Face hub dataset by name, pass "
                       f"--allow-download)")


def resolved_config(src: Path | str | None, cfg: ImportConfig, explicit: dict | None = None) -> dict:
    explicit = {k: v for k, v in (explicit or {}).items() if v}
    shape = shape_of(src, cfg, explicit)
    if shape == "files":
        files = readers.find_files(Path(src) if src is not None else None, cfg.split, explicit)
        files = {k: str(v.resolve()) for k, v in files.items()}
    else:
        files = {"pairs": str(src) if shape == "hub" else str(Path(src).resolve())}
        if explicit.get("corpus"):
            if not Path(explicit["corpus"]).exists():
                raise HardnegError(f"{explicit['corpus']}: --corpus file not found")
            files["corpus"] = str(Path(explicit["corpus"]).resolve())
    source = str(Path(src).resolve()) if src is not None and shape != "hub" else (src or "")
    return {**asdict(cfg), "source": source, "shape": shape, "files": files}


def pairs_to_tables(pairs: pa.Table, extra: pa.Table | None = None, negatives: str = "keep"
                    ) -> dict[str, pa.Table]:
    """Pure: (query, pos, neg) rows [+ an extra corpus (title, text)] -> corpus, queries, qrels keyed by text hashes.

    Duplicate texts collapse to one query / document (the first title wins); a query's positives over all its rows
    are its qrels; `negatives` keep = negative texts join the corpus, ignore = they do not."""
    docs: dict[str, tuple[str, str]] = {}  # doc_id -> (title, text)
    queries: dict[str, str] = {}
    qrels: dict[tuple[str, str], None] = {}
    for q, pos, neg in zip(*(pairs.column(c).to_pylist() for c in ("query", "pos", "neg"))):
        qid = text_id("q", q)
        queries.setdefault(qid, q)
        for t in pos:
            did = text_id("d", t)
            docs.setdefault(did, ("", t))
            qrels[(qid, did)] = None
        if negatives == "keep":
            for t in neg:
                docs.setdefault(text_id("d", t), ("", t))
    if extra is not None:
        for title, text in zip(extra.column("title").to_pylist(), extra.column("text").to_pylist()):
            joined = f"{title} {text}".strip() if title else text
            if joined.strip():
                docs.setdefault(text_id("d", joined), (title, text))
    return {
        "corpus": pa.table({"doc_id": list(docs), "title": [v[0] for v in docs.values()],
                            "text": [v[1] for v in docs.values()]}, schema=schemas.CORPUS),
        "queries": pa.table({"query_id": list(queries), "text": list(queries.values())}, schema=schemas.QUERIES),
        "qrels": pa.table({"query_id": [k[0] for k in qrels], "doc_id": [k[1] for k in qrels],
                           "relevance": [1] * len(qrels)}, schema=schemas.QRELS),
    }


def read_source(config: dict, cfg: ImportConfig) -> tuple[dict[str, pa.Table], dict, dict]:
    """The three tables of a resolved import config, the file each came from (for errors) and extra counts."""
    files = config["files"]
    if config["shape"] == "files":
        paths = {kind: Path(p) for kind, p in files.items()}
        return {kind: readers.read_table(path, kind) for kind, path in paths.items()}, paths, {}
    pairs = readers.read_pairs(files["pairs"], cfg.split, cfg.query_column, cfg.positive_column,
                               cfg.negative_column, hub=config["shape"] == "hub")
    extra = readers.read_texts(Path(files["corpus"])) if "corpus" in files else None
    tables = pairs_to_tables(pairs, extra, cfg.flag_negatives)
    n_neg = sum(len(x) for x in pairs.column("neg").to_pylist())
    counts = {"pair_rows": pairs.num_rows, "negatives_in_source": n_neg,
              "negatives_in_source_ignored": n_neg if cfg.flag_negatives == "ignore" else 0,
              "extra_corpus_documents": extra.num_rows if extra is not None else 0}
    return tables, {kind: Path(files["pairs"]) for kind in ("corpus", "queries", "qrels")}, counts


def run(src: Path | str | None, out: Path, cfg: ImportConfig, overwrite: bool = False,
        explicit: dict | None = None) -> dict:
    """`explicit`: {"corpus": F, "queries": F, "qrels": F} (the --corpus / --queries / --qrels options)."""
    config = resolved_config(src, cfg, explicit)
    tables, files, extra_counts = read_source(config, cfg)
    tables, counts = data.validate(tables, files)
    reads = ([Path(p).parent if "*" in Path(p).name else Path(p) for p in config["files"].values()]
             if config["shape"] != "hub" else [])
    with StageWriter(out, "import", config, overwrite=overwrite, reads=reads) as w:
        for name, table in tables.items():
            w.write_table(f"{name}.parquet", table)
        files = {kind: Path(p) for kind, p in config["files"].items()} if config["shape"] != "hub" else {}
        return w.finish(summary={**counts, **extra_counts}, sources=source_fingerprints(files))
