"""GGUF checkpoints (llama.cpp's single-file format) as executors, and their conversion to safetensors.

transformers reads a GGUF file with ``gguf_file=`` (the ``gguf`` package parses it) and dequantizes every tensor to
the requested dtype; the tokenizer and its chat template come from the same file. A model loaded that way carries
a GGUF "quantizer" that makes ``save_pretrained`` refuse, so :func:`convert_gguf` copies the dequantized weights
into a freshly constructed model of the same config and saves that one.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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


def _quiet_load(file: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    require("gguf", f"reading {file.name}")  # transformers needs it; say so in one line, not its long ImportError
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        with _no_dequantize_bar():
            model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
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
