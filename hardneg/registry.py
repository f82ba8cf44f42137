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
TEACHERS = {
    "bi-encoder": "hardneg.teachers.bi_encoder:BiEncoderTeacher",
    "cross-encoder": "hardneg.teachers.cross_encoder:CrossEncoderTeacher",
}
JUDGES = {  # hardneg.judges: one protocol, judge(conversations) -> P(yes) per conversation
    "transformers": "hardneg.judges.transformers:TransformersJudge",
    "openai": "hardneg.judges.openai:OpenAIJudge",
}


def lookup(registry: dict[str, str], name: str, what: str):
    try:
        target = registry[name]
    except KeyError:
        raise HardnegError(f"unknown {what} {name!r}; choose from {', '.join(registry)}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
