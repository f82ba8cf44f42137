"""Readers that turn a corpus, its queries and qrels from common layouts into hardneg's three tables.

Supported (detected from the file names in SRC):

* BEIR: `corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/<split>.tsv` or `qrels.<split>.tsv` (header
  `query-id corpus-id score`);
* JSONL with hardneg or BEIR field names (`doc_id`/`_id`/`id`, `query_id`, ...), qrels as `qrels[.<split>].jsonl`;
* MS MARCO-style TSV: `collection.tsv` or `corpus.tsv` (`id<TAB>text[<TAB>title]`, no header), `queries[.<split>].tsv`,
  qrels in TREC form (`qid 0 docid rel`) or three columns; a first row that names an id column first and another
  known column (`query-id corpus-id score`) is a header;
* Parquet: `corpus.parquet`, `queries.parquet`, `qrels[.<split>].parquet`.

Every reader reports the file and line of the first bad record.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hardneg import schemas
from hardneg.errors import HardnegError

ALIASES = {
    "doc_id": ("doc_id", "_id", "id", "docid", "pid", "corpus-id", "corpus_id"),
    "query_id": ("query_id", "_id", "id", "qid", "query-id"),
    "title": ("title",),
    "text": ("text", "contents", "body", "passage", "query"),
    "relevance": ("relevance", "score", "label", "rel"),
}
QREL_ALIASES = {
    "query_id": ("query_id", "query-id", "qid"),
    "doc_id": ("doc_id", "corpus-id", "corpus_id", "docid", "pid"),
    "relevance": ("relevance", "score", "label", "rel"),
}
EXTENSIONS = (".jsonl.gz", ".jsonl", ".tsv.gz", ".tsv", ".parquet")

csv.field_size_limit(sys.maxsize)


def _lines(path: Path):
    """Yield (line number, line), decoded line by line so that a decoding error names its own line; turn decoding
    or truncation faults into a HardnegError with the line."""
    n = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise HardnegError(
                        f"{path}: line {n}: not UTF-8 ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8"
                    ) from None
                yield n, line.removeprefix("\ufeff") if n == 1 else line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise HardnegError(f"{path}: truncated or corrupt gzip after line {n} ({exc}); re-create the file") from None


def _pick(columns, wanted: dict, path: Path) -> dict:
    """Map each wanted column to the first alias present in `columns`."""
    found = {}
    for name, aliases in wanted.items():
        hit = next((a for a in aliases if a in columns), None)
        if hit is None and name not in ("title",):
            raise HardnegError(
                f"{path}: no column for {name!r} (looked for {', '.join(aliases)}; found {', '.join(columns)})"
            )
        found[name] = hit
    return found


def _records_jsonl(path: Path):
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HardnegError(f"{path}: line {n}: not valid JSON ({exc.msg}); fix or remove the line") from None
        if not isinstance(rec, dict):
            raise HardnegError(f"{path}: line {n}: expected a JSON object")
        yield n, rec


def _table_from_records(path: Path, records, wanted: dict) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in wanted}
    mapping = None
    for n, rec in records:
        if mapping is None:
            mapping = _pick(list(rec), wanted, path)
        for name, key in mapping.items():
            value = rec.get(key, "") if key is not None else ""
            if value is None:
                value = ""
            if name == "relevance":
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise HardnegError(f"{path}: line {n}: {key} = {value!r} is not an integer") from None
            elif isinstance(value, (dict, list)):
                raise HardnegError(f"{path}: line {n}: {key} should be text, got {type(value).__name__}")
            else:
                value = str(value)
            cols[name].append(value)
    return cols


def _tsv_rows(path: Path):
    for n, line in _lines(path):
        line = line.rstrip("\r\n")
        if line.strip():
            yield n, line.split("\t") if "\t" in line else line.split()


def _read_tsv_table(path: Path, kind: str) -> dict[str, list]:
    rows = _tsv_rows(path)
    first = next(rows, None)
    if first is None:
        return {k: [] for k in _wanted(kind)}
    lowered = [c.strip().lower() for c in first[1]]
    header_names = {a for aliases in {**ALIASES, **QREL_ALIASES}.values() for a in aliases}
    id_names = set(ALIASES["doc_id"] + ALIASES["query_id"])
    # a header names an id column first and at least one more known column (a text "query" is not a header)
    if lowered[0] in id_names and header_names & set(lowered[1:]):
        header, body = lowered, rows
    else:
        header, body = None, _chain(first, rows)
        if kind == "qrels":
            width = len(first[1])
            if width == 4:  # TREC: qid iteration docid rel
                header = ["query_id", "iteration", "doc_id", "relevance"]
            elif width == 3:
                header = ["query_id", "doc_id", "relevance"]
            else:
                raise HardnegError(f"{path}: line {first[0]}: qrels rows need 3 or 4 columns, found {width}")
        elif kind == "corpus":
            header = ["doc_id", "text", "title"][: len(first[1])]
        else:
            header = ["query_id", "text"][: len(first[1])]

    def records():
        for n, fields in body:
            if len(fields) > len(header) or (len(fields) < len(header) and kind == "qrels"):
                raise HardnegError(f"{path}: line {n}: {len(fields)} fields, expected {len(header)}")
            yield n, dict(zip(header, fields))

    return _table_from_records(path, records(), _wanted(kind))


def _chain(first, rest):
    yield first
    yield from rest


def _wanted(kind: str) -> dict:
    if kind == "corpus":
        return {k: ALIASES[k] for k in ("doc_id", "title", "text")}
    if kind == "queries":
        return {"query_id": ALIASES["query_id"], "text": ALIASES["text"]}
    return QREL_ALIASES


def read_table(path: Path, kind: str) -> pa.Table:
    """Read one corpus / queries / qrels file into its hardneg schema."""
    path = Path(path)
    schema = {"corpus": schemas.CORPUS, "queries": schemas.QUERIES, "qrels": schemas.QRELS}[kind]
    name = path.name
    if name.endswith(".parquet"):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise HardnegError(f"{path}: not a readable Parquet file ({exc}); re-create it") from None
        mapping = _pick(table.column_names, _wanted(kind), path)
        cols = {
            k: (table.column(v) if v is not None else pa.array([""] * table.num_rows)) for k, v in mapping.items()
        }
        return schemas.conform(pa.table(cols), schema, str(path))
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        cols = _table_from_records(path, _records_jsonl(path), _wanted(kind))
    elif name.endswith((".tsv", ".tsv.gz", ".txt")):
        cols = _read_tsv_table(path, kind)
    else:
        raise HardnegError(f"{path}: unknown file type; use .jsonl[.gz], .tsv[.gz] or .parquet")
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()})


def _find(src: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in EXTENSIONS:
            p = src / f"{stem}{ext}"
            if p.exists():
                return p
    return None


def find_files(src: Path, split: str) -> dict[str, Path]:
    """Locate the corpus, queries and qrels files of a source directory."""
    src = Path(src)
    if not src.is_dir():
        raise HardnegError(f"{src}: not a directory; pass a folder holding corpus, queries and qrels files")
    found = {
        "corpus": _find(src, ("corpus", "collection")),
        "queries": _find(src, (f"queries.{split}", f"queries/{split}", "queries")),
        "qrels": _find(src, (f"qrels/{split}", f"qrels.{split}", f"qrels-{split}", "qrels")),
    }
    for kind, path in found.items():
        if path is None:
            present = ", ".join(sorted(p.name for p in src.iterdir())) or "nothing"
            raise HardnegError(
                f"{src}: no {kind} file for split {split!r} (found {present}); expected e.g. "
                f"{ {'corpus': 'corpus.jsonl', 'queries': 'queries.jsonl', 'qrels': f'qrels/{split}.tsv'}[kind] }"
            )
    return found
