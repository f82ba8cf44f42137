"""Teachers score (query, document) pairs. One protocol, one method:

    class Teacher:
        def __init__(self, cfg: ScoreConfig): ...
        def score(self, queries: list[str], docs: list[str]) -> np.ndarray: ...   # float32, one score per pair
        activation: str   # what the scores are, recorded in the manifest ("cosine", "none (raw logits)")

Register a new teacher in `hardneg.registry.TEACHERS`.
"""

from hardneg.registry import TEACHERS, lookup


def load_teacher(cfg):
    return lookup(TEACHERS, cfg.teacher_kind, "teacher kind")(cfg)
