"""The dataset directory written by `hardneg import`: corpus, queries and qrels as Parquet, validated."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hardneg import schemas
from hardneg.errors import HardnegError
from hardneg.io.stagedir import require_finished

TABLES = {"corpus": schemas.CORPUS, "queries": schemas.QUERIES, "qrels": schemas.QRELS}


def _first_duplicate(ids: pa.ChunkedArray) -> tuple[int, str, int] | None:
    """(row of the first repeat, its id, row of the id's first occurrence), or None when ids are unique."""
    counts = pc.value_counts(ids)
    dup = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(dup) == 0:
        return None
    first: dict[str, int] = {}
    rows = pc.indices_nonzero(pc.is_in(ids, value_set=dup)).to_pylist()
    for row, value in zip(rows, pc.take(ids, rows).to_pylist()):
        if value in first:
            return row, value, first[value]
        first[value] = row
    return None


def _first_row(mask: pa.ChunkedArray | pa.Array) -> int | None:
    idx = pc.indices_nonzero(pc.fill_null(mask, False))
    return idx[0].as_py() if len(idx) else None


def _nulls_to_empty(table: pa.Table) -> pa.Table:
    """Null strings (Parquet sources) count as empty, so the checks below catch them."""
    columns = [pc.fill_null(c, "") if pa.types.is_string(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def validate(tables: dict[str, pa.Table], files: dict[str, Path]) -> tuple[dict[str, pa.Table], dict]:
    """Check ids and texts; return tables (queries limited to those named in qrels) and counts.

    Errors name the file, the (1-based) record number and the column.
    """
    corpus, queries, qrels = (_nulls_to_empty(tables[k]) for k in ("corpus", "queries", "qrels"))
    if corpus.num_rows == 0:
        raise HardnegError(f"{files['corpus']}: the corpus is empty; a corpus needs at least one document")
    for kind, table, id_col in (("corpus", corpus, "doc_id"), ("queries", queries, "query_id")):
        row = _first_row(pc.equal(pc.utf8_trim_whitespace(table[id_col]), ""))
        if row is not None:
            raise HardnegError(f"{files[kind]}: record {row + 1}: empty {id_col}; give every row an id")
        dup = _first_duplicate(table[id_col])
        if dup:
            raise HardnegError(
                f"{files[kind]}: record {dup[0] + 1}: duplicate {id_col} {dup[1]!r} (first at record {dup[2] + 1}); "
                f"ids must be unique, remove or rename one"
            )
    doc_text = pc.binary_join_element_wise(corpus["title"], corpus["text"], "")
    row = _first_row(pc.equal(pc.utf8_trim_whitespace(doc_text), ""))
    if row is not None:
        raise HardnegError(
            f"{files['corpus']}: record {row + 1} (doc_id {corpus['doc_id'][row].as_py()!r}): empty title and text; "
            f"remove the document or give it text"
        )
    row = _first_row(pc.equal(pc.utf8_trim_whitespace(queries["text"]), ""))
    if row is not None:
        raise HardnegError(
            f"{files['queries']}: record {row + 1} (query_id {queries['query_id'][row].as_py()!r}): empty text; "
            f"remove the query or give it text"
        )
    row = _first_row(pc.is_null(qrels["relevance"]))
    if row is not None:
        raise HardnegError(f"{files['qrels']}: record {row + 1}: empty relevance; give every qrels row a relevance")
    for col, table, kind in (("doc_id", corpus, "corpus"), ("query_id", queries, "queries")):
        row = _first_row(pc.invert(pc.is_in(qrels[col], value_set=table[col].combine_chunks())))
        if row is not None:
            raise HardnegError(
                f"{files['qrels']}: record {row + 1}: {col} {qrels[col][row].as_py()!r} is not in {files[kind]}; "
                f"fix the id or remove the qrels row"
            )
    in_qrels = pc.is_in(queries["query_id"], value_set=pc.unique(qrels["query_id"]))
    kept_queries = queries.filter(in_qrels)
    counts = {
        "documents": corpus.num_rows,
        "queries": kept_queries.num_rows,
        "queries_without_qrels_dropped": queries.num_rows - kept_queries.num_rows,
        "qrels": qrels.num_rows,
    }
    return {"corpus": corpus, "queries": kept_queries, "qrels": qrels}, counts


def load(data_dir: Path, names: tuple[str, ...] = tuple(TABLES)) -> dict[str, pa.Table]:
    """Read a finished `hardneg import` directory (only the tables `names`)."""
    data_dir = Path(data_dir)
    require_finished(data_dir, "import")
    out = {}
    for name, schema in TABLES.items():
        if name not in names:
            continue
        path = data_dir / f"{name}.parquet"
        try:
            out[name] = schemas.conform(pq.read_table(path), schema, str(path))
        except (OSError, pa.ArrowInvalid) as exc:
            raise HardnegError(f"{path}: unreadable ({exc}); rerun `hardneg import` with --overwrite") from None
    return out


def document_texts(corpus: pa.Table) -> list[str]:
    """The text a model sees for each document: title and text joined by a space (BEIR convention)."""
    titles = corpus["title"].to_pylist()
    texts = corpus["text"].to_pylist()
    return [f"{t} {x}".strip() if t else x for t, x in zip(titles, texts)]


def text_hash(text: str) -> int:
    """A stable 64-bit hash of a text (blake2b): score cache keys, same-text keys."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def normalize_text(texts: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    """The one text normalization of hardneg: texts equal after it are the same text (mine's `same_text_as_positive`
    through `text_keys`, the filter's near-duplicate rule). Unicode NFKC, lower-case, punctuation, symbols and
    invisible format characters dropped ("COVID-19" and "COVID19" are "covid19", "well‑known" is "wellknown",
    "snake_case" is "snakecase"), runs of whitespace and control characters (tabs, newlines, no-break spaces) made
    one space, trimmed. Accents are kept. Arrow kernels only; `normalize` is the same for one text."""
    if isinstance(texts, list):
        texts = pa.array(texts, pa.string())
    x = pc.utf8_lower(pc.utf8_normalize(texts, "NFKC"))
    x = pc.replace_substring_regex(x, r"[\p{P}\p{S}\p{Cf}]+", "")
    x = pc.replace_substring_regex(x, r"[\p{Z}\p{Cc}]+", " ")
    return pc.utf8_trim_whitespace(x)


def normalize(text: str) -> str:
    """`normalize_text` of one text (about a millisecond: normalize many at once with `normalize_text`)."""
    return normalize_text([text])[0].as_py()


def text_keys(corpus: pa.Table, batch_rows: int = 65536) -> pa.Array:
    """A 64-bit key (`text_hash`) of every document's normalized title and text: documents with the same normalized
    text have the same key. `index` stores them beside the doc ids, so `mine` flags same-text candidates without
    loading the corpus (two different texts share a key with probability ~n²/2^65)."""
    keys = []
    for batch in corpus.select(["title", "text"]).to_batches(batch_rows):
        norm = normalize_text(pc.binary_join_element_wise(pc.fill_null(batch["title"], ""),
                                                          pc.fill_null(batch["text"], ""), " "))
        keys.append(np.fromiter((text_hash(t) for t in norm.to_pylist()), dtype=np.uint64, count=len(norm)))
    return pa.array(np.concatenate(keys) if keys else np.zeros(0, np.uint64), pa.uint64())


def text_keys_by_id(corpus: pa.Table) -> dict[str, int]:
    """{doc_id: `text_keys` key}: what the near-duplicate rule (filter, score's depth) compares, the key `mine` and
    the index use."""
    return dict(zip(corpus["doc_id"].to_pylist(), text_keys(corpus).to_pylist()))
