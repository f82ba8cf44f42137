"""Name -> implementation registries. Implementations are imported only when used, so `--help` stays instant."""

from __future__ import annotations

import importlib

from hardneg.errors import HardnegError

RETRIEVERS = {
    "bm25": "hardneg.retrievers.bm25:Bm25s",
    "rank-bm25": "hardneg.retrievers.bm25:RankBm25",
    "dense": "hardneg.retrievers.dense:Dense",
    "hybrid": "hardneg.retrievers.hybrid:Hybrid",
}
DENSE_RETRIEVERS = ("dense", "hybrid")  # the retrievers whose index holds dense embeddings (hardneg.retrievers.dense)


def uses_dense(retriever: str) -> bool:
    """Whether an index of `retriever` encodes the corpus with a sentence-transformers model."""
    return retriever in DENSE_RETRIEVERS


TEACHERS = {
    "bi-encoder": "hardneg.teachers.bi_encoder:BiEncoderTeacher",
    "cross-encoder": "hardneg.teachers.cross_encoder:CrossEncoderTeacher",
}
JUDGES = {  # hardneg.judges: one protocol, judge(conversations) -> P(yes) per conversation
    "transformers": "hardneg.judges.transformers:TransformersJudge",
    "openai": "hardneg.judges.openai:OpenAIJudge",
}


def register(registry: dict[str, str], name: str, target: str) -> None:
    """Add (or replace) an implementation: `target` is "module:attribute", imported on first use. A registered
    teacher kind is a valid `teacher_kind` (hardneg.config), as long as the process that runs it registered it too."""
    registry[name] = target


def lookup(registry: dict[str, str], name: str, what: str):
    try:
        target = registry[name]
    except KeyError:
        raise HardnegError(f"unknown {what} {name!r}; choose from {', '.join(registry)}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
