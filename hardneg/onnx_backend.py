"""ONNX Runtime encoder backend (`--backend onnx | onnx-int8`) for sentence-transformers models.

The transformer of a sentence-transformers model (its first module) is exported once to ONNX with torch's exporter
and cached in `model_cache_dir()/onnx/<digest of its weights>/` (hardneg.models passes the folder); onnxruntime then
runs that graph in place of the torch forward pass inside the same `SentenceTransformer`, so tokenization,
length-sorted batching, pooling and normalization stay sentence-transformers' own. Backends:

* `onnx`: the float32 graph; embeddings within ~1e-6 of torch (rounding of a different kernel library);
* `onnx-int8`: its matrix multiplications quantized to int8 (dynamic activations, per-channel weights in a 7-bit
  range so that CPUs without VNNI do not saturate); faster, approximate: measure before trusting it.

sentence-transformers' own `backend="onnx"` goes through optimum-onnx, which requires transformers < 4.58 and so
cannot be installed beside sentence-transformers >= 5 (huggingface/optimum-onnx#114); this module needs only
`onnxruntime` and `onnx` (`pip install 'hardneg[onnx]'`). Heavy imports stay inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from hardneg.errors import HardnegError

FORMAT = 1  # bump when the export or quantization settings change, so cached graphs are rebuilt
FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
exports = 0  # graphs written by this process (tests check that a cached graph is not exported again)


def require(backend: str) -> None:
    """Raise a one-line HardnegError when the packages of an ONNX backend are missing."""
    if backend == "torch":
        return
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise HardnegError(f"--backend {backend} needs onnxruntime and onnx: run `pip install 'hardneg[onnx]'` "
                           f"(or use --backend torch)") from None


def _transformer(model):
    """The Hugging Face model inside the first module of a SentenceTransformer, or a clear error."""
    first = model[0]
    hf = getattr(first, "auto_model", None)
    if hf is None or not hasattr(hf, "config"):
        raise HardnegError(f"--backend onnx runs models whose first module is a Hugging Face transformer; this one "
                           f"starts with {type(first).__name__}: use --backend torch")
    return first, hf


def _tokenize(model, texts: list[str]) -> dict:
    """sentence-transformers' tokenization (`preprocess` in newer releases, `tokenize` before)."""
    return (getattr(model, "preprocess", None) or model.tokenize)(texts)


def _input_names(model) -> list[str]:
    feats = _tokenize(model, ["a b c", "a"])
    names = [n for n in INPUTS if n in feats]
    if "input_ids" not in names or "attention_mask" not in names:
        raise HardnegError("--backend onnx needs a tokenizer that returns input_ids and attention_mask; "
                           "use --backend torch")
    return names


def digest(model, names: list[str]) -> str:
    """What the exported graph depends on: the transformer's class, config and weights, the inputs, FORMAT."""
    import torch

    _, hf = _transformer(model)
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT, type(hf).__name__, names]).encode())
    h.update(hf.config.to_json_string(use_diff=False).encode())
    for key, tensor in sorted(hf.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _export(model, names: list[str], dest: Path) -> None:
    import torch

    _, hf = _transformer(model)

    class Forward(torch.nn.Module):
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, *inputs):
            return self.hf(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    # eager attention traces to plain MatMul/Softmax, which onnxruntime fuses and quantizes; the example batch is
    # padded so that the attention mask is part of the graph
    example = _tokenize(model, ["an example sentence that is longer", "short"])
    previous = getattr(hf.config, "_attn_implementation", None)
    _set_attention(hf, "eager")
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]}
            torch.onnx.export(Forward(hf).eval(), tuple(example[n].cpu() for n in names), str(dest), dynamo=False,
                              input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
                              opset_version=17, do_constant_folding=True)
    finally:
        if previous is not None:
            _set_attention(hf, previous)


def _set_attention(hf, implementation: str) -> None:
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation(implementation)
    else:
        hf.config._attn_implementation = implementation


def _quantize(src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # its advice to pre-process is for static quantization
        try:
            quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        finally:
            logging.disable(logging.NOTSET)


def graph_path(model, backend: str, name: str, cache_root: Path) -> Path:
    """The cached ONNX graph of `model` for `backend` in `cache_root` (`hardneg.models.model_cache_dir()`), exported
    (and quantized) once if missing."""
    global exports
    import torch

    names = _input_names(model)
    folder = Path(cache_root) / "onnx" / digest(model, names)
    target = folder / FILES[backend]
    if target.exists():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
            fp32 = folder / FILES["onnx"]
            if not fp32.exists():
                sys.stderr.write(f"hardneg: exporting {name} to ONNX once, into {folder}\n")
                _export(model, names, Path(tmp) / FILES["onnx"])
                exports += 1
                (folder / "export.json").write_text(json.dumps(
                    {"model": name, "inputs": names, "format": FORMAT, "torch": torch.__version__},
                    indent=2) + "\n")
                for f in Path(tmp).iterdir():  # external weight files of a > 2 GB model first, the graph last
                    if f.name != FILES["onnx"]:
                        os.replace(f, folder / f.name)
                os.replace(Path(tmp) / FILES["onnx"], fp32)
            if backend == "onnx-int8":
                sys.stderr.write(f"hardneg: quantizing {name} to int8 once, into {folder}\n")
                _quantize(fp32, Path(tmp) / FILES[backend])
                exports += 1
                os.replace(Path(tmp) / FILES[backend], target)
    except OSError as exc:
        raise HardnegError(f"{folder}: cannot write the ONNX export there ({exc.strerror}); set HARDNEG_MODELS to "
                           f"a writable folder") from None
    return target


def attach(model, backend: str, name: str, cache_root: Path) -> None:
    """Make `model` (a SentenceTransformer on CPU) run its transformer with onnxruntime, in place, its graph cached in
    `cache_root`; the caller has checked `require(backend)` (hardneg.models.load_sentence_transformer does, through
    hardneg.config.check_backend, before loading the model)."""
    import onnxruntime as ort
    import torch

    first, _ = _transformer(model)
    path = graph_path(model, backend, name, cache_root)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # idle threads sleep instead of spinning: no slower on whole batches, and kinder to a shared machine
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    output = getattr(first, "module_output_name", "token_embeddings")

    def forward(features, **kwargs):
        feed = {n: features[n].detach().cpu().numpy().astype("int64", copy=False) for n in names}
        features[output] = torch.from_numpy(session.run(None, feed)[0])
        return features

    first.forward = forward  # the module's own forward is replaced on this instance only
    model.hardneg_backend = backend
    model.hardneg_onnx_path = str(path)
