"""`score`: a teacher scores every (query, positive) and (query, candidate) pair of the mined table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from hardneg import schemas
from hardneg.config import ScoreConfig, asdict
from hardneg.io import data
from hardneg.io.stagedir import StageWriter, part_paths, read_part, require_finished
from hardneg.registry import TEACHERS, lookup
from hardneg.teachers import load_teacher


def add_scores(mined: pa.Table, scores: np.ndarray) -> pa.Table:
    """Pure: append the teacher's scores to a mined table."""
    table = mined.append_column("teacher_score", pa.array(scores, type=pa.float32()))
    return schemas.conform(table, schemas.SCORED, "scored")


def score_table(mined: pa.Table, teacher, query_text: dict[str, str], doc_text: dict[str, str]) -> pa.Table:
    queries = [query_text[q] for q in mined["query_id"].to_pylist()]
    docs = [doc_text[d] for d in mined["doc_id"].to_pylist()]
    return add_scores(mined, teacher.score(queries, docs))


def run(mined_dir: Path, data_dir: Path, out: Path, cfg: ScoreConfig, overwrite: bool = False) -> dict:
    require_finished(mined_dir, "mine")
    tables = data.load(data_dir)
    parts = part_paths(mined_dir)
    with StageWriter(out, "score", asdict(cfg), inputs=[mined_dir, data_dir], overwrite=overwrite) as w:
        todo = [p for p in parts if not w.has(p.name)]
        if todo:
            teacher = load_teacher(cfg)
            q, c = tables["queries"], tables["corpus"]
            query_text = dict(zip(q["query_id"].to_pylist(), q["text"].to_pylist()))
            doc_text = dict(zip(c["doc_id"].to_pylist(), data.document_texts(c)))
            for path in tqdm(todo, desc="score: parts", unit="part", disable=len(todo) < 2):
                w.write_table(path.name, score_table(read_part(path, schemas.MINED), teacher, query_text, doc_text))
        activation = lookup(TEACHERS, cfg.teacher_kind, "teacher kind").activation
        return w.finish(
            summary={"teacher": cfg.model, "teacher_kind": cfg.teacher_kind, "activation": activation},
            models={"teacher": cfg.model},
        )
