"""Readers that turn a corpus, its queries and qrels from common layouts into hardneg's three tables.

Supported (detected from the file names in SRC):

* BEIR: `corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/<split>.tsv` or `qrels.<split>.tsv` (header
  `query-id corpus-id score`);
* JSONL with hardneg or BEIR field names (`doc_id`/`_id`/`id`, `query_id`, ...), qrels as `qrels[.<split>].jsonl`;
* MS MARCO-style TSV: `collection.tsv` or `corpus.tsv` (`id<TAB>text[<TAB>title]`, no header), `queries[.<split>].tsv`,
  qrels in TREC form (`qid 0 docid rel`) or three columns; a first row that names an id column first and another
  known column (`query-id corpus-id score`) is a header;
* Parquet: `corpus.parquet`, `queries.parquet`, `qrels[.<split>].parquet`;
* CSV with a header row, under the same names (`corpus.csv`, `queries.csv`, `qrels.<split>.csv`);
* the Hugging Face sharded Parquet layout: `corpus/*.parquet`, `queries/*.parquet`, qrels as `qrels/<split>.tsv`,
  `qrels/<split>-*.parquet`, `default/<split>-*.parquet` or `data/<split>-*.parquet` (a path with `*` is a set of
  shards read in name order);
* MS MARCO's `qrels.<split>.txt`.

Pairs and FlagEmbedding files (`read_pairs`): one row per query with its positive text(s) and optionally negative
text(s), in Parquet, JSONL, JSON, CSV, TSV (with a header), a `datasets.save_to_disk` folder or a Hub name.

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
EXTENSIONS = (".jsonl.gz", ".jsonl", ".tsv.gz", ".tsv", ".parquet", ".csv", ".txt")

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
        table = _read_parquet(path)
        mapping = _pick(table.column_names, _wanted(kind), path)
        cols = {
            k: (table.column(v) if v is not None else pa.array([""] * table.num_rows)) for k, v in mapping.items()
        }
        return schemas.conform(pa.table(cols), schema, str(path))
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        cols = _table_from_records(path, _records_jsonl(path), _wanted(kind))
    elif name.endswith((".tsv", ".tsv.gz", ".txt")):
        cols = _read_tsv_table(path, kind)
    elif name.endswith((".csv", ".csv.gz")):
        cols = _table_from_records(path, _records_csv(path), _wanted(kind))
    else:
        raise HardnegError(f"{path}: unknown file type; use .jsonl[.gz], .tsv[.gz], .csv or .parquet")
    return pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()})


def _read_parquet(path: Path) -> pa.Table:
    """One Parquet file, or the shards a `*` pattern names, concatenated in name order."""
    files = sorted(path.parent.glob(path.name)) if "*" in path.name else [path]
    if not files:
        raise HardnegError(f"{path}: no Parquet shards match")
    try:
        tables = [pq.read_table(f) for f in files]
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (OSError, pa.ArrowInvalid) as exc:
        raise HardnegError(f"{path}: not a readable Parquet file ({exc}); re-create it") from None


def _records_csv(path: Path, delimiter: str = ","):
    """Rows of a CSV (or, with delimiter tab, a TSV) file with a header row, as (line number, dict)."""
    lines = (line for _, line in _lines(path))
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        for rec in reader:
            if None in rec:
                raise HardnegError(f"{path}: line {reader.line_num}: more fields than the header has columns")
            yield reader.line_num, {k.strip(): v for k, v in rec.items()}
    except csv.Error as exc:
        raise HardnegError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None


def _find(src: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in EXTENSIONS:
            p = src / f"{stem}{ext}"
            if p.exists():
                return p
    return None


def _shards(src: Path, patterns: tuple[str, ...]) -> Path | None:
    """The first `patterns` entry (a relative path with `*`) that matches Parquet shards under `src`."""
    for pattern in patterns:
        if sorted(src.glob(pattern)):
            return src / pattern
    return None


def splits_found(src: Path) -> list[str]:
    """Names of the qrels splits a source directory holds (for the missing-qrels error)."""
    names = set()
    for p in src.glob("qrels*"):
        if p.is_dir():
            names |= {c.name.split("-")[0].split(".")[0] for c in p.iterdir() if not c.name.startswith(".")}
        else:
            parts = p.name.replace("-", ".").split(".")
            if len(parts) > 2:
                names.add(parts[1])
    for folder in ("default", "data"):
        names |= {c.name.split("-")[0] for c in (src / folder).glob("*.parquet")}
    return sorted(n for n in names if n)


def find_files(src: Path | None, split: str, explicit: dict[str, Path] | None = None) -> dict[str, Path]:
    """Locate the corpus, queries and qrels files of a source directory; `explicit` files (--corpus, --queries,
    --qrels) take the place of the ones found (with all three, no directory is needed)."""
    explicit = {k: Path(v) for k, v in (explicit or {}).items() if v}
    for kind, path in explicit.items():
        if not (path.exists() or ("*" in path.name and sorted(path.parent.glob(path.name)))):
            raise HardnegError(f"{path}: --{kind} file not found")
    if src is None:
        missing = [k for k in ("corpus", "queries", "qrels") if k not in explicit]
        if missing:
            raise HardnegError(f"no source folder and no --{' / --'.join(missing)}; pass a folder, or all of --corpus, "
                               f"--queries and --qrels")
        return explicit
    src = Path(src)
    if not src.is_dir():
        raise HardnegError(f"{src}: not a directory; pass a folder holding corpus, queries and qrels files")
    found = {
        "corpus": explicit.get("corpus") or _find(src, ("corpus", "collection"))
        or _shards(src, ("corpus/*.parquet",)),
        "queries": explicit.get("queries") or _find(src, (f"queries.{split}", f"queries/{split}", "queries"))
        or _shards(src, (f"queries/{split}-*.parquet", "queries/*.parquet")),
        "qrels": explicit.get("qrels") or _find(src, (f"qrels/{split}", f"qrels.{split}", f"qrels-{split}", "qrels"))
        or _shards(src, (f"qrels/{split}-*.parquet", f"qrels/{split}/*.parquet", f"default/{split}-*.parquet",
                         f"data/{split}-*.parquet")),
    }
    for kind, path in found.items():
        if path is None:
            present = ", ".join(sorted(p.name for p in src.iterdir())) or "nothing"
            hint = ""
            if kind != "corpus":
                splits = [s for s in splits_found(src) if s != split]
                if splits:
                    hint = f"; splits found: {', '.join(splits)}: pass --split {splits[0]}"
            raise HardnegError(
                f"{src}: no {kind} file for split {split!r} (found {present}){hint}; expected e.g. "
                f"{ {'corpus': 'corpus.jsonl', 'queries': 'queries.jsonl', 'qrels': f'qrels/{split}.tsv'}[kind] }"
                + (f", or pass --{kind} FILE" if not hint else "")
            )
    return found


# ---- pairs and FlagEmbedding files -------------------------------------------------------------------------------

PAIR_ALIASES = {
    "query": ("anchor", "query", "question", "queries", "sentence1", "text1", "sentence_A"),
    "positive": ("positive", "pos", "positives", "answer", "document", "passage", "sentence2", "text2", "response",
                 "sentence_B"),
    "negative": ("negative", "neg", "negatives", "hard_negative", "hard_negatives"),
}
PAIR_FILE_TYPES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".csv", ".csv.gz", ".tsv", ".tsv.gz")
PAIRS_SCHEMA = pa.schema([("query", pa.string()), ("pos", pa.list_(pa.string())), ("neg", pa.list_(pa.string()))])


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets.Dataset.save_to_disk` (or `DatasetDict.save_to_disk`)."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _load_saved(path: Path, split: str) -> pa.Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise HardnegError(f"{path}: not a readable `datasets.save_to_disk` folder ({exc})") from None
    return _dataset_table(ds, split, str(path))


def _dataset_table(ds, split: str, source: str) -> pa.Table:
    """The Arrow table of a `datasets.Dataset`, or of the `split` of a DatasetDict (its only split if it has one)."""
    if isinstance(ds, dict):  # DatasetDict
        splits = list(ds.keys())
        name = split if split in splits else (splits[0] if len(splits) == 1 else None)
        if name is None:
            raise HardnegError(f"{source}: no split {split!r} (found {', '.join(splits)}); pass --split {splits[0]}")
        ds = ds[name]
    return ds.with_format("arrow")[:]


def load_hub(name: str, split: str) -> pa.Table:
    """A dataset of pairs from the Hugging Face hub (only called with --allow-download)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; one line names the dataset
        raise HardnegError(f"{name}: cannot load from the Hugging Face hub ({type(exc).__name__}: {exc})") from None
    return _dataset_table(ds, split, name)


def _pairs_raw(path: Path, split: str) -> pa.Table | list[dict]:
    """A pairs file as an Arrow table (Parquet, saved datasets) or a list of records (JSONL, JSON, CSV, TSV)."""
    name = path.name
    if path.is_dir():
        if is_saved_dataset(path):
            return _load_saved(path, split)
        raise HardnegError(f"{path}: a folder without corpus/queries/qrels files nor a `datasets.save_to_disk` "
                           f"dataset")
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith(".json"):
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
        if head.startswith(b"["):
            try:
                recs = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HardnegError(f"{path}: not valid JSON ({exc})") from None
            if not all(isinstance(r, dict) for r in recs):
                raise HardnegError(f"{path}: expected a JSON array of objects")
            return recs
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return [rec for _, rec in _records_jsonl(path)]
    if name.endswith((".csv", ".csv.gz")):
        return [rec for _, rec in _records_csv(path)]
    if name.endswith((".tsv", ".tsv.gz")):
        return [rec for _, rec in _records_csv(path, "\t")]
    raise HardnegError(f"{path}: unknown file type for pairs; use {', '.join(PAIR_FILE_TYPES)} or a "
                       f"`datasets.save_to_disk` folder")


def _texts(value, where: str) -> list[str]:
    """A cell as a list of texts: a string, a list of strings, or nothing (None / empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if not isinstance(v, str):
                raise HardnegError(f"{where}: expected texts, got {type(v).__name__}")
            if v.strip():
                out.append(v)
        return out
    raise HardnegError(f"{where}: expected a text or a list of texts, got {type(value).__name__}")


def pair_columns(columns: list[str], source: str, query_column: str = "", positive_column: str = "",
                 negative_column: str = "") -> dict[str, list[str]]:
    """Which columns hold the query, the positive(s) and the negative(s): named ones, else the first alias present;
    negatives also from n-tuple columns negative_1..n."""
    out: dict[str, list[str]] = {}
    for role, named in (("query", query_column), ("positive", positive_column), ("negative", negative_column)):
        if named:
            if named not in columns:
                raise HardnegError(f"{source}: no column {named!r} (--{role}-column); found {', '.join(columns)}")
            out[role] = [named]
            continue
        hit = next((a for a in PAIR_ALIASES[role] if a in columns), None)
        if hit is None and role == "negative":
            out[role] = sorted((c for c in columns if c.startswith("negative_") and c[9:].isdigit()),
                               key=lambda c: int(c[9:]))
            continue
        if hit is None:
            raise HardnegError(f"{source}: no {role} column (looked for {', '.join(PAIR_ALIASES[role])}; found "
                               f"{', '.join(columns) or 'no columns'}); name it with --{role}-column")
        out[role] = [hit]
    return out


def read_pairs(src: Path | str, split: str = "train", query_column: str = "", positive_column: str = "",
               negative_column: str = "", hub: bool = False) -> pa.Table:
    """A pairs / triplets / FlagEmbedding source as a table (query, pos: list, neg: list), one row per input row.

    `hub`: `src` is a Hugging Face dataset name. Rows with an empty query or no positive are errors naming the row.
    """
    source = str(src)
    raw = load_hub(source, split) if hub else _pairs_raw(Path(src), split)
    if isinstance(raw, pa.Table):
        columns = raw.column_names
    else:
        if not raw:
            raise HardnegError(f"{source}: no rows")
        columns = list(raw[0])
    cols = pair_columns(columns, source, query_column, positive_column, negative_column)
    if isinstance(raw, pa.Table):
        if raw.num_rows == 0:
            raise HardnegError(f"{source}: no rows")
        data = {c: raw.column(c).to_pylist() for cs in cols.values() for c in cs}
        n = raw.num_rows
    else:
        data = {c: [rec.get(c) for rec in raw] for cs in cols.values() for c in cs}
        n = len(raw)
    queries, pos, neg = [], [], []
    for i in range(n):
        where = f"{source}: row {i + 1}"
        q = data[cols["query"][0]][i]
        if not isinstance(q, str) or not q.strip():
            raise HardnegError(f"{where}: empty or missing query ({cols['query'][0]}); remove the row or give it text")
        p = _texts(data[cols["positive"][0]][i], f"{where}: {cols['positive'][0]}")
        if not p:
            raise HardnegError(f"{where}: no positive text ({cols['positive'][0]}); remove the row or give it one")
        queries.append(q)
        pos.append(p)
        neg.append([t for c in cols["negative"] for t in _texts(data[c][i], f"{where}: {c}")])
    return pa.table({"query": queries, "pos": pos, "neg": neg}, schema=PAIRS_SCHEMA)


def read_texts(path: Path) -> pa.Table:
    """An extra corpus / candidate pool (title, text): a FlagEmbedding pool of {"text"} lines, a BEIR or hardneg
    corpus file (its ids are not used: pair-derived documents are keyed by text), Parquet, CSV or a folder with a
    corpus file."""
    path = Path(path)
    if path.is_dir():
        found = _find(path, ("corpus", "collection")) or _shards(path, ("corpus/*.parquet",))
        if found is None:
            raise HardnegError(f"{path}: no corpus file in this folder (corpus.jsonl, corpus.parquet, ...)")
        path = found
    wanted = {"title": ALIASES["title"], "text": ALIASES["text"]}
    name = path.name
    if name.endswith(".parquet"):
        table = _read_parquet(path)
        mapping = _pick(table.column_names, wanted, path)
        cols = {k: (table.column(v).to_pylist() if v else [""] * table.num_rows) for k, v in mapping.items()}
    elif name.endswith((".jsonl", ".jsonl.gz", ".json")):
        cols = _table_from_records(path, _records_jsonl(path), wanted)
    elif name.endswith((".csv", ".csv.gz")):
        cols = _table_from_records(path, _records_csv(path), wanted)
    elif name.endswith((".tsv", ".tsv.gz", ".txt")):
        cols = _read_tsv_table(path, "corpus")
        cols = {"title": cols["title"], "text": cols["text"]}
    else:
        raise HardnegError(f"{path}: unknown file type for a corpus; use .jsonl[.gz], .tsv, .csv or .parquet")
    return pa.table({k: pa.array([v or "" for v in cols[k]], pa.string()) for k in ("title", "text")})
