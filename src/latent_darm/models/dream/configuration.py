"""The Dream config as the official ``config.json`` has it (``model_type "Dream"``), as a transformers config.

Dream-v0 is Qwen2 with bidirectional attention. We accept the published fields and refuse the switches this
implementation does not compute (sliding window, RoPE scaling) by name, so a checkpoint we would mis-run is
reported instead of run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from latent_darm.errors import CheckpointError
from latent_darm.io import read_json_file
from latent_darm.models.config_checks import check_hf_config

MODEL_TYPE = "Dream"
_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mask_token_id",
)


class DreamConfig(PretrainedConfig):
    """Architecture and special ids of a Dream-v0 checkpoint (field names as in the published config)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int | None = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1_000_000.0,
        attention_dropout: float = 0.0,
        mask_token_id: int = 151666,
        pad_token_id: int | None = 151643,
        bos_token_id: int | None = 151643,
        eos_token_id: int | None = 151643,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        # The official config has these Qwen2 switches; we keep them so a saved config still reads as Dream's.
        for name, default in (("use_sliding_window", False), ("sliding_window", None)):
            setattr(self, name, kwargs.pop(name, default))
        kwargs.pop("rope_scaling", None)  # checked to be null by check_dream_config
        kwargs.pop("auto_map", None)  # the hub's remote-code pointer; we never follow it
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def check_dream_config(raw: dict[str, Any], source: str) -> None:
    """Refuse, by field name, a Dream config this implementation would not run faithfully."""
    for name in _REQUIRED:
        if raw.get(name) is None:
            raise CheckpointError(f"{source}: missing required field '{name}'")
    # types and ranges of every numeric field (booleans and strings refused, layer count and size bounded)
    check_hf_config(raw, source)
    heads, kv_heads = raw["num_attention_heads"], raw.get("num_key_value_heads") or raw["num_attention_heads"]
    if raw["hidden_size"] % heads:
        raise CheckpointError(f"{source}: hidden_size {raw['hidden_size']} is not divisible by num_attention_heads")
    if heads % kv_heads:
        raise CheckpointError(f"{source}: num_attention_heads {heads} is not divisible by num_key_value_heads")
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: field 'hidden_act' = {raw['hidden_act']!r} is not supported ('silu')")
    if raw.get("use_sliding_window"):
        raise CheckpointError(f"{source}: field 'use_sliding_window' = true is not supported")
    if raw.get("rope_scaling") not in (None, {}):
        raise CheckpointError(f"{source}: field 'rope_scaling' is not supported (RoPE without scaling only)")
    if raw.get("tie_word_embeddings"):
        raise CheckpointError(f"{source}: field 'tie_word_embeddings' = true is not supported (Dream has lm_head)")
    mask = raw["mask_token_id"]
    if not isinstance(mask, int) or not 0 <= mask < raw["vocab_size"]:
        raise CheckpointError(f"{source}: mask_token_id {mask!r} is outside the vocabulary")


def read_config(directory: Path) -> DreamConfig:
    """``config.json`` of a Dream directory, checked; one-line errors name the field."""
    path = directory / "config.json"
    raw = read_json_file(path, CheckpointError)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    check_dream_config(raw, str(path))
    return DreamConfig(**{k: v for k, v in raw.items() if k != "model_type"})
