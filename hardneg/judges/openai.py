"""The `openai` judge: any OpenAI-compatible chat-completions server (vLLM, llama.cpp's server, Ollama, SGLang, TGI,
a hosted API) over HTTP with httpx.

Each verdict is one request for one token with `logprobs` and `top_logprobs = 20`; the score is
P(yes) / (P(yes) + P(no)) over the returned first-token alternatives. A server that returns no log-probabilities (or
refuses the option) is asked for a short answer instead, parsed strictly (`yes` / `no`, nothing else). Requests run
`concurrency` at a time; 429, 5xx, time-outs and refused connections are retried `max_retries` times with exponential
backoff (honouring a numeric Retry-After); authentication and unknown-model errors stop at once with one line.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

from hardneg.errors import HardnegError
from hardneg.judges import parse_verdict, yes_probability

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF = 0.5  # seconds before the first retry; doubled each time, with jitter, at most MAX_BACKOFF
MAX_BACKOFF = 30.0
TOP_LOGPROBS = 20


def chat_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else f"{endpoint}/chat/completions"


def _message(response) -> str:
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = str(msg)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:200]


def first_token_score(body: dict) -> float | None:
    """The verdict of one chat-completions response: from the first token's top_logprobs when present (the OpenAI
    `logprobs.content[0].top_logprobs` list, or the legacy `logprobs.top_logprobs[0]` dict), else a strict parse of
    the answer text."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise HardnegError(f"the judge server's answer has no choices: {str(body)[:200]}") from None
    lp = choice.get("logprobs") or {}
    top: dict[str, float] = {}
    content = lp.get("content") if isinstance(lp, dict) else None
    if content:
        first = content[0]
        for alt in first.get("top_logprobs") or []:
            top[alt["token"]] = max(alt["logprob"], top.get(alt["token"], -1e30))
        top.setdefault(first.get("token", ""), first.get("logprob", -1e30))
    elif isinstance(lp, dict) and lp.get("top_logprobs"):
        top = dict(lp["top_logprobs"][0])
    score = yes_probability(top) if top else None
    if score is None:
        text = (choice.get("message") or {}).get("content") or choice.get("text")
        score = parse_verdict(text)
    return score


class OpenAIJudge:
    def __init__(self, spec):
        import httpx

        self.spec = spec
        self.url = chat_url(spec.endpoint)
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=spec.timeout,
                                   limits=httpx.Limits(max_connections=spec.concurrency))
        self.logprobs = True
        self.calls = 0

    def _payload(self, conversation: list[dict]) -> dict:
        payload = {"model": self.spec.model, "messages": conversation, "temperature": 0.0, "seed": 0}
        if self.logprobs:
            payload.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            payload.update(max_tokens=3)
        return payload

    def _post(self, conversation: list[dict]) -> dict:
        import httpx

        rng = random.Random(0)
        for attempt in range(self.spec.max_retries + 1):
            last = attempt == self.spec.max_retries
            asked_logprobs = self.logprobs
            try:
                r = self.client.post(self.url, json=self._payload(conversation))
            except httpx.TransportError as exc:  # refused, reset, time-out
                if last:
                    raise HardnegError(f"{self.url}: no answer after {attempt + 1} tries ({type(exc).__name__}: "
                                       f"{exc}); is the server running? (--endpoint)") from None
                self._sleep(attempt, None, rng)
                continue
            self.calls += 1
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    raise HardnegError(f"{self.url}: the answer is not JSON: {r.text[:200]!r}") from None
            msg = _message(r)
            if r.status_code in (401, 403):
                raise HardnegError(f"{self.url}: authentication failed (HTTP {r.status_code}: {msg}); put the key "
                                   f"in the environment variable {self.spec.api_key_env} (--api-key-env)")
            if r.status_code == 404:
                if "model" in msg.lower():
                    raise HardnegError(f"{self.url}: model {self.spec.model!r} not found (HTTP 404: {msg}); pass "
                                       f"the name the server serves (--model), see GET {self.url[:-17]}/models")
                raise HardnegError(f"{self.url}: no chat-completions endpoint here (HTTP 404); pass the server's "
                                   f"base URL, e.g. --endpoint http://localhost:8000/v1")
            if r.status_code == 400 and asked_logprobs and "logprob" in msg.lower():
                self.logprobs = False  # a server without log-probabilities: ask for a short answer and parse it
                return self._post(conversation)
            if r.status_code in RETRY_STATUS and not last:
                self._sleep(attempt, r.headers.get("retry-after"), rng)
                continue
            raise HardnegError(f"{self.url}: HTTP {r.status_code} ({msg})"
                               + (f" after {attempt + 1} tries" if r.status_code in RETRY_STATUS else ""))
        raise AssertionError("unreachable")

    @staticmethod
    def _sleep(attempt: int, retry_after: str | None, rng: random.Random) -> None:
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        if wait is None:
            wait = BACKOFF * 2 ** attempt * (0.5 + rng.random())
        time.sleep(min(wait, MAX_BACKOFF))

    def judge(self, conversations: list[list[dict]]) -> list[float | None]:
        if len(conversations) <= 1 or self.spec.concurrency == 1:
            return [first_token_score(self._post(c)) for c in conversations]
        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            return [first_token_score(body) for body in pool.map(self._post, conversations)]
