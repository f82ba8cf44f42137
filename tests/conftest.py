"""Shared fixtures: the tiny real collection (tests/data/tiny, a slice of NFCorpus with one injected duplicate),
each stage built once per session through the CLI, a cross-encoder the tests train themselves, and a fake teacher
(`--teacher-kind overlap`) for the tests whose point is the plumbing rather than a model's scores."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = Path(__file__).parent / "data" / "tiny"
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


# -- a deterministic fake teacher ---------------------------------------------------------------------------------

FAKE_TEACHER = "overlap"  # --teacher-kind overlap, registered below in this process (and by `hardneg_cmd()`'s)


class OverlapTeacher:
    """Scores a (query, document) pair by the Jaccard overlap of their lower-cased word sets (of the first
    `max_seq_length` words of each, when set): deterministic, instant and without a model, while a labeled positive
    usually shares more words with its query than a random document does. The model name must still resolve (a
    missing model folder is the same error as with a real teacher); its weights are never loaded."""

    activation = "token overlap (Jaccard; the tests' fake teacher)"

    def __init__(self, cfg):
        from hardneg.models import resolve

        resolve(cfg.model, cfg.allow_download)
        self.limit = cfg.max_seq_length

    def words(self, text: str) -> set[str]:
        return set(re.findall(r"\w+", text.casefold())[: self.limit])

    def score(self, queries: list[str], docs: list[str]) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float32)
        for i, (q, d) in enumerate(zip(queries, docs)):
            a, b = self.words(q), self.words(d)
            out[i] = len(a & b) / len(a | b) if a or b else 0.0
        return out


def register_fake_teacher() -> None:
    from hardneg.registry import TEACHERS, register

    register(TEACHERS, FAKE_TEACHER, "conftest:OverlapTeacher")


register_fake_teacher()  # before the CLI is imported: it reads the teacher kinds then
from hardneg.cli import app  # noqa: E402


def hardneg_cmd() -> list[str]:
    """`python -m hardneg` for a subprocess that knows the fake teacher too (run it with `hardneg_env()`)."""
    return [sys.executable, "-c", "import conftest; from hardneg.cli import main; main()"]


def hardneg_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def hardneg(*args, popen: bool = False, cwd=None, kill_after: int | None = None,
            stall: tuple[int, Path] | None = None):
    """Run hardneg in a subprocess that knows the fake teacher (`FAKE`). The test hooks of hardneg.io.stagedir:
    `kill_after=n` SIGKILLs it right after its n-th part; `stall=(n, file)` makes it wait after its n-th part, holding
    its lock, until `file` exists. `popen=True` returns the running process."""
    env = hardneg_env()
    for key in ("HARDNEG_TEST_KILL_AFTER_PARTS", "HARDNEG_TEST_STALL_AFTER_PARTS", "HARDNEG_DEBUG"):
        env.pop(key, None)
    if kill_after is not None:
        env["HARDNEG_TEST_KILL_AFTER_PARTS"] = str(kill_after)
    if stall is not None:
        env["HARDNEG_TEST_STALL_AFTER_PARTS"], env["HARDNEG_TEST_STALL_UNTIL"] = str(stall[0]), str(stall[1])
    cmd = [*hardneg_cmd(), *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=cwd)


FAKE = ("--teacher-kind", FAKE_TEACHER)  # the `score` options of the fake teacher
FAKE_CONFIG = f'[score]\nteacher_kind = "{FAKE_TEACHER}"\n'  # ... and its pipeline TOML section


def read_tiny():
    corpus = [json.loads(x) for x in gzip.open(TINY / "corpus.jsonl.gz", "rt")]
    queries = [json.loads(x) for x in open(TINY / "queries.jsonl")]
    qrels = [line.rstrip("\n").split("\t") for line in open(TINY / "qrels" / "test.tsv")][1:]
    return corpus, queries, qrels


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture
def fake_config(tmp_path) -> Path:
    """A pipeline config of the defaults but the fake teacher (for `hardneg run` tests about the plumbing)."""
    path = tmp_path / "fake-teacher.toml"
    path.write_text(FAKE_CONFIG)
    return path


@pytest.fixture(scope="session")
def tiny_src() -> Path:
    return TINY


@pytest.fixture(scope="session")
def dup_id() -> tuple[str, str]:
    """(query_id, doc_id) of the injected exact duplicate of a query's positive: a known false negative."""
    corpus, queries, qrels = read_tiny()
    dup = next(d["_id"] for d in corpus if d["_id"].startswith("DUP-"))
    return next(q for q, d, _ in qrels if f"DUP-{d}" == dup), dup


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def data_dir(run_dir, tiny_src) -> Path:
    invoke("import", tiny_src, "--out", run_dir / "data")
    return run_dir / "data"


@pytest.fixture(scope="session")
def index_dirs(run_dir, data_dir) -> dict[str, Path]:
    out = {}
    for retriever in ("bm25", "dense", "hybrid"):
        out[retriever] = run_dir / f"index-{retriever}"
        invoke("index", data_dir, "--out", out[retriever], "--retriever", retriever)
    return out


@pytest.fixture(scope="session")
def mined_dir(run_dir, data_dir, index_dirs) -> Path:
    invoke("mine", index_dirs["hybrid"], "--data", data_dir, "--out", run_dir / "mined", "--top-k", "10")
    return run_dir / "mined"


@pytest.fixture(scope="session")
def scored_dir(run_dir, data_dir, mined_dir) -> Path:
    invoke("score", mined_dir, "--data", data_dir, "--out", run_dir / "scored")
    return run_dir / "scored"


@pytest.fixture(scope="session")
def filtered_dir(run_dir, scored_dir) -> Path:
    invoke("filter", scored_dir, "--out", run_dir / "filtered", "--negatives-per-query", "0")
    return run_dir / "filtered"


@pytest.fixture(scope="session")
def relabeled_dir(run_dir, filtered_dir) -> Path:
    invoke("relabel", filtered_dir, "--out", run_dir / "relabeled")
    return run_dir / "relabeled"


def clear_negatives(per_query: int = 3) -> list[tuple[str, str]]:
    """(query, document) pairs that are clearly not relevant: documents of the tiny corpus that are nobody's
    positive, taken from the far end of the corpus order for each query."""
    corpus, queries, qrels = read_tiny()
    labeled = {d for _, d, _ in qrels}
    others = [d["_id"] for d in corpus if d["_id"] not in labeled and not d["_id"].startswith("DUP-")]
    return [(q, others[(7 * i + k) % len(others)]) for i, (q, _, _) in enumerate(qrels) for k in range(per_query)]


def train_cross_encoder(next_batch, steps: int, out: Path, max_length: int = 128,
                        top_layers: int | None = None) -> Path:
    """The tests' cross-encoder recipe, saved to `out`: the packaged MiniLM backbone with a fresh head (torch seed 0),
    BCE on `steps` batches of (query, document, label) from `next_batch()`, AdamW at lr 1e-4, `max_length` tokens.
    `top_layers=N` trains only the head and the encoder's top N layers (the rest frozen: a cheaper backward pass).
    Shared with bench/score_depth.py, which trains the whole model on a BEIR train split at 128 tokens."""
    import torch
    from sentence_transformers import CrossEncoder

    from hardneg.models import resolve

    torch.manual_seed(0)
    ce = CrossEncoder(resolve("all-MiniLM-L6-v2"), num_labels=1, max_length=max_length)
    model, tok = ce.model, ce.tokenizer
    if top_layers is not None:
        n = model.config.num_hidden_layers
        trained = ("classifier", "pooler", *(f"encoder.layer.{i}." for i in range(n - top_layers, n)))
        for name, param in model.named_parameters():
            param.requires_grad = any(t in name for t in trained)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(steps):
        batch = next_batch()
        enc = tok([b[0] for b in batch], [b[1] for b in batch], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        logits = model(**enc).logits.view(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([b[2] for b in batch]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ce.save(str(out))
    return out


@pytest.fixture(scope="session")
def trained_cross_encoder(tmp_path_factory) -> Path:
    """A real cross-encoder (`train_cross_encoder`), trained for 80 seeded steps on the tiny collection's
    (query, positive) vs `clear_negatives()` pairs at 64 tokens, its top layer and head only, then saved."""
    import random

    rng = random.Random(0)
    corpus, queries, qrels = read_tiny()
    docs = {d["_id"]: f"{d['title']} {d['text']}" for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    examples = ([(qtext[q], docs[d], 1.0) for q, d, _ in qrels]
                + [(qtext[q], docs[d], 0.0) for q, d in clear_negatives()])
    out = tmp_path_factory.mktemp("ce") / "tiny-cross-encoder"
    return train_cross_encoder(lambda: rng.sample(examples, 8), 80, out, max_length=64, top_layers=1)


def load_bench(name: str):
    """A bench/ script as a module (bench/ is not a package the tests import by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parent.parent / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_one_st_step(train_dataset, out_dir: Path):
    """One seeded SentenceTransformerTrainer step with MultipleNegativesRankingLoss from the packaged MiniLM on
    `train_dataset` (4 rows); asserts the step ran, its loss is finite and the weights moved."""
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from hardneg.models import resolve

    torch.manual_seed(0)
    model = SentenceTransformer(resolve("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = 64
    before = [p.detach().clone() for p in model.parameters()]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset,
                                         loss=losses.MultipleNegativesRankingLoss(model))
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    return result


# -- table and source builders shared by the tests ------------------------------------------------------------

def scored(rows):
    """A SCORED table from (query, doc, rank, is_positive, teacher_score) tuples."""
    import pyarrow as pa

    from hardneg import schemas

    cols = list(zip(*rows))
    return pa.table(
        {"query_id": cols[0], "doc_id": cols[1], "rank": cols[2], "retriever": ["x"] * len(rows),
         "retriever_score": [1.0] * len(rows), "is_positive": cols[3], "same_text_as_positive": [False] * len(rows),
         "teacher_score": cols[4]},
        schema=schemas.SCORED,
    )


ROWS = [  # query, doc, rank, positive, teacher score
    ("q", "p1", 3, True, 0.80), ("q", "p2", None, True, 0.60),
    ("q", "a", 1, False, 0.70), ("q", "b", 2, False, 0.58), ("q", "c", 4, False, 0.50), ("q", "d", 5, False, 0.20),
]


def bad_source(tmp_path, corpus=None, queries=None, qrels=None):
    c, q, r = read_tiny()
    d = tmp_path / "src"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (corpus if corpus is not None else c)))
    (d / "queries.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (queries if queries is not None else q)))
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(map(str, x)) + "\n" for x in (qrels if qrels is not None else r)))
    return d
