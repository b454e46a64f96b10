"""Type and range checks on a checkpoint's ``config.json`` before any model is built from it.

A config is user input: ``"rope_theta": "abc"``, ``"n_kv_heads": 0`` or a layer count with twelve digits would
otherwise surface as a TypeError deep in torch, a division by zero, or an attempt to allocate more memory than
exists. Each check names the file, the field and the value in one line.

Sizes are bounded by memory, not by taste: a config whose parameters would need more than
:data:`MAX_MODEL_BYTES` even in 16-bit precision describes no model any machine could hold, so it is refused as
corrupt. Layer counts are bounded separately (:data:`MAX_LAYERS`), because building that many modules takes
unbounded time even when each layer is tiny.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from latent_darm.errors import CheckpointError

MAX_MODEL_BYTES = 2**44  # 16 TiB: more than the memory of any single machine
MAX_LAYERS = 4096  # published models have at most a few hundred layers
BYTES_PER_PARAMETER = 2  # the smallest dtype we load (bfloat16/float16)


def check_int(raw: Mapping[str, Any], name: str, source: str, *, minimum: int = 1, optional: bool = True) -> None:
    """``raw[name]`` must be an integer ≥ ``minimum`` (booleans and strings such as "2" are refused)."""
    value = raw.get(name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{source}: field '{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise CheckpointError(f"{source}: field '{name}' must be >= {minimum}, got {value}")


def check_positive_number(raw: Mapping[str, Any], name: str, source: str) -> None:
    """``raw[name]``, when present, must be a finite number > 0."""
    value = raw.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"{source}: field '{name}' must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{source}: field '{name}' must be a finite number > 0, got {value!r}")


def check_token_ids(raw: Mapping[str, Any], name: str, source: str, minimum: int | None = 0) -> None:
    """A special-token id field: absent, an integer id (≥ ``minimum``), or (as transformers allows) a list of them."""
    value = raw.get(name)
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is None and not isinstance(value, list):
            continue
        if isinstance(item, bool) or not isinstance(item, int) or (minimum is not None and item < minimum):
            raise CheckpointError(f"{source}: field '{name}' must be a token id (an integer >= 0), got {value!r}")


def check_layers(raw: Mapping[str, Any], name: str, source: str) -> None:
    check_int(raw, name, source)
    layers = raw.get(name)
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise CheckpointError(
            f"{source}: field '{name}' = {layers} is absurd (more than {MAX_LAYERS} layers; published models have a "
            "few hundred at most)"
        )


def check_model_size(parameters: int, source: str, fields: Mapping[str, Any]) -> None:
    """Refuse a config whose parameter count could not fit in any machine's memory."""
    if parameters * BYTES_PER_PARAMETER > MAX_MODEL_BYTES:
        described = ", ".join(f"{k} {v}" for k, v in fields.items())
        raise CheckpointError(
            f"{source}: {described} describe a model of about {parameters:.2e} parameters, more than the memory of "
            f"any machine could hold ({MAX_MODEL_BYTES // 2**40} TiB even in 16-bit); the config is corrupt"
        )


def llada_parameters(raw: Mapping[str, Any]) -> int:
    """Parameter count implied by a LLaDA config (fields already type-checked)."""
    d, layers, heads = raw["d_model"], raw["n_layers"], raw["n_heads"]
    kv = raw.get("n_kv_heads") or heads
    mlp = raw.get("mlp_hidden_size") or int(raw.get("mlp_ratio", 4) * d)
    vocab = max(raw["vocab_size"], raw.get("embedding_size") or 0)
    head_dim = max(d // max(heads, 1), 1)
    per_layer = 2 * d * d + 2 * d * kv * head_dim + 3 * d * mlp
    return layers * per_layer + 2 * vocab * d


def check_llada_config(raw: Mapping[str, Any], source: str) -> None:
    """Types and ranges of every numeric field of a LLaDA config, then its size."""
    for name in ("d_model", "n_heads", "vocab_size", "max_sequence_length"):
        check_int(raw, name, source, optional=False)
    check_layers(raw, "n_layers", source)
    for name in ("mlp_hidden_size", "n_kv_heads", "embedding_size"):
        check_int(raw, name, source)
    for name in ("rope_theta", "rms_norm_eps", "mlp_ratio"):
        check_positive_number(raw, name, source)
    for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
        check_token_ids(raw, name, source)
    if isinstance(raw.get("mask_token_id"), list):
        raise CheckpointError(f"{source}: field 'mask_token_id' must be one integer, got {raw['mask_token_id']!r}")
    if isinstance(raw.get("eos_token_id"), list):
        raise CheckpointError(f"{source}: field 'eos_token_id' must be one integer, got {raw['eos_token_id']!r}")
    if "weight_tying" in raw and not isinstance(raw["weight_tying"], bool):
        raise CheckpointError(f"{source}: field 'weight_tying' must be true or false, got {raw['weight_tying']!r}")
    sizes = {k: raw[k] for k in ("n_layers", "d_model", "vocab_size") if k in raw}
    check_model_size(llada_parameters(raw), source, sizes)


# Hugging Face causal-LM configs: the common field names (others are left to transformers).
HF_INT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "head_dim",
    "n_embd",
    "n_head",
    "n_positions",
)
HF_LAYER_FIELDS = ("num_hidden_layers", "n_layer")
HF_NUMBER_FIELDS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "rope_theta")
HF_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def check_heads(section: Mapping[str, Any], source: str) -> None:
    """Attention heads must split the width (when no ``head_dim`` says otherwise) and share the key/value heads
    evenly; transformers would otherwise stop with a multi-line validation error from the hub library."""
    width, heads = section.get("hidden_size"), section.get("num_attention_heads")
    kv_heads = section.get("num_key_value_heads")
    if isinstance(width, int) and isinstance(heads, int) and section.get("head_dim") is None and width % heads:
        raise CheckpointError(
            f"{source}: hidden_size {width} is not divisible by num_attention_heads {heads} (and no head_dim is set)"
        )
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        raise CheckpointError(
            f"{source}: num_attention_heads {heads} is not divisible by num_key_value_heads {kv_heads}"
        )


def check_hf_config(raw: Mapping[str, Any], source: str) -> None:
    """The numeric fields a causal-LM config commonly has (top level and ``text_config``), then its size."""
    sections = [raw, *(raw[k] for k in ("text_config",) if isinstance(raw.get(k), Mapping))]
    for section in sections:
        for name in HF_INT_FIELDS:
            check_int(section, name, source)
        for name in HF_LAYER_FIELDS:
            check_layers(section, name, source)
        for name in HF_NUMBER_FIELDS:
            check_positive_number(section, name, source)
        for name in HF_TOKEN_FIELDS:
            check_token_ids(section, name, source, minimum=None)  # some configs use -1 for "none"
        check_heads(section, source)
        d = section.get("hidden_size") or section.get("n_embd")
        layers = section.get("num_hidden_layers") or section.get("n_layer")
        vocab = section.get("vocab_size") or 0
        if isinstance(d, int) and isinstance(layers, int):
            mlp = section.get("intermediate_size") or 4 * d
            parameters = layers * (4 * d * d + 3 * d * mlp) + 2 * vocab * d
            sizes = {k: section[k] for k in ("num_hidden_layers", "n_layer", "hidden_size", "n_embd") if k in section}
            check_model_size(parameters, source, sizes)


GENERATION_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def check_generation_config(raw: Any, source: str) -> None:
    """A ``generation_config.json``: a JSON object whose token ids are ids. Refused, not ignored (transformers
    drops a malformed one without a word), because its EOS ids decide where the executor's answers stop."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    for name in GENERATION_TOKEN_FIELDS:
        check_token_ids(raw, name, source, minimum=None)
