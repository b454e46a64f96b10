"""GGUF checkpoints (llama.cpp's single-file format) as executors, and their conversion to safetensors.

transformers reads a GGUF file with ``gguf_file=`` (the ``gguf`` package parses it) and dequantizes every tensor to
the requested dtype; the tokenizer and its chat template come from the same file. A model loaded that way carries
a GGUF "quantizer" that makes ``save_pretrained`` refuse, so :func:`convert_gguf` copies the dequantized weights
into a freshly constructed model of the same config and saves that one.

Left to itself, transformers parses the file's metadata three times for one model and tokenizer (tokenizer,
config, weights) and rebuilds gguf's tensor-name table once for every submodule of the model: 35 s for SmolLM2-135M
on one CPU core, of which dequantizing is about 3 s. :func:`load_gguf` parses once and builds the table once
(:func:`_parse_once`): the same weights and tokenizer in 15 s (``bench/gguf_load.py``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError
from latent_darm.extras import require

SUFFIX = ".gguf"


def find_gguf(reference: str | Path) -> Path | None:
    """The GGUF file ``reference`` names: the file itself, or the one ``.gguf`` in a directory without a
    ``config.json``. None when ``reference`` is not a GGUF checkpoint (a normal directory, a hub id)."""
    path = Path(reference).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise CheckpointError(f"{path} holds several GGUF files ({names}); pass the one to use")
    return files[0] if files else None


@contextlib.contextmanager
def _no_dequantize_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which ``disable_progress_bar`` does not reach."""
    module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = getattr(module, "tqdm", None)
    if original is None:
        yield
        return
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = original


def _one_reader_per_file(reader_class: type) -> Callable[..., object]:
    """A ``GGUFReader`` factory that parses each file once and hands the same (read-only, memory-mapped) reader to
    every later request for that file."""
    readers: dict[tuple[str, str], object] = {}

    def reader(path: str | Path, mode: str = "r") -> object:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    return reader


@contextlib.contextmanager
def _parse_once() -> Iterator[None]:
    """While loading one GGUF model: one parse of each file and one tensor-name table per architecture.

    transformers imports ``GGUFReader`` and ``get_tensor_name_map`` from ``gguf`` inside the functions that use them,
    so replacing the module's attributes for the duration of a load reaches every call. Both are read-only for
    transformers, so sharing them cannot change what is loaded (the tests compare against a plain load). Should a
    later transformers import them differently, loading stays correct and is only as slow as before."""
    gguf = importlib.import_module("gguf")
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = _one_reader_per_file(reader_class)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


# What the gguf package raises on a file that is not GGUF or ends early (inside its header: ``struct.error``).
UNREADABLE = (struct.error, ValueError, IndexError, KeyError, OSError, UnicodeDecodeError, OverflowError)


def read_architecture(file: str | Path) -> str:
    """``general.architecture`` of a GGUF file (its metadata is parsed; tensors are memory-mapped, not read). A file
    that is not GGUF, or is truncated inside its header, is one :class:`CheckpointError` naming the file."""
    gguf = require("gguf", f"reading {Path(file).name}")
    try:
        field = gguf.GGUFReader(file).fields.get("general.architecture")
        if field is None:
            raise CheckpointError(f"{file}: a GGUF file without general.architecture; cannot tell which model it is")
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except UNREADABLE as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: not a readable GGUF file (truncated or corrupt header: {reason})") from None


def transformers_reads(architecture: str) -> bool:
    """Whether the installed transformers loads GGUF files of ``architecture`` (llama.cpp spells a few differently:
    ``qwen2moe``, ``gpt-oss``, ``t5encoder``)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    spellings = {architecture, architecture.replace("-", "_"), architecture.replace("moe", "_moe")}
    if "t5" in architecture:
        spellings.add("t5")
    return bool(spellings & set(GGUF_SUPPORTED_ARCHITECTURES))


def check_architecture(file: str | Path, shown_as: str | Path | None = None) -> str:
    """The file's architecture, or one error naming the file (``shown_as``, e.g. the final name of a file still
    being written) when transformers cannot read it."""
    architecture = read_architecture(file)
    if not transformers_reads(architecture):
        raise CheckpointError(
            f"{shown_as or file}: GGUF architecture {architecture!r} cannot be read by the installed transformers "
            f"{transformers.__version__}; a newer transformers may read it"
        )
    return architecture


def _quiet_load(file: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    require("gguf", f"reading {file.name}")  # transformers needs it; say so in one line, not its long ImportError
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with _parse_once(), _no_dequantize_bar():
            check_architecture(file)  # parsed once: the same reader serves the loads below
            config = AutoConfig.from_pretrained(file.parent, gguf_file=file.name)
            tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, config=config)
            model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, config=config, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, struct.error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: cannot load a causal LM from this GGUF file ({reason})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    return model, tokenizer


def load_gguf(file: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM dequantized to ``dtype``, tokenizer with the file's chat template)."""
    return _quiet_load(Path(file), dtype)


def is_gguf_model(model: PreTrainedModel) -> bool:
    """Whether ``model`` was read from a GGUF file (it then carries transformers' GGUF quantizer)."""
    config = getattr(getattr(model, "hf_quantizer", None), "quantization_config", None)
    method = getattr(config, "quant_method", None)
    return str(getattr(method, "value", method)).lower() == "gguf"


def plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a freshly constructed model with no GGUF quantizer attached, so it can be saved."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise CheckpointError(
            f"GGUF conversion: weights do not fit the model (missing {missing}, unexpected {unexpected})"
        )
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = model.generation_config
    return fresh.eval()


def convert_gguf(file: str | Path, out: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``out/`` as a normal Hugging Face checkpoint (config.json, model.safetensors, tokenizer with the
    chat template) from a GGUF file; returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} exists and is not empty; choose a new output directory")
    model, tokenizer = load_gguf(file, dtype)
    out.mkdir(parents=True, exist_ok=True)
    plain_copy(model).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
