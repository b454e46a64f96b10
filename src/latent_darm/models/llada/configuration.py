"""The LLaDA checkpoint config, read from the published ``config.json`` as it is.

LLaDA checkpoints carry an OLMo-style config with many switches; the published models use one setting of each
(Llama blocks, RMSNorm, SiLU, RoPE, no biases). We accept exactly the fields those checkpoints have, check that
every switch has the value this implementation computes, and refuse anything else by name, so a checkpoint we
would silently mis-run is reported instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from latent_darm.errors import CheckpointError
from latent_darm.io import read_json_file
from latent_darm.models.config_checks import check_llada_config

# Fields whose value must be exactly this for our forward pass to be the checkpoint's forward pass.
_FIXED_VALUES: dict[str, tuple[Any, ...]] = {
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "activation_type": ("silu",),
    "rope": (True,),
    "alibi": (False,),
    "attention_layer_norm": (False,),
    "include_bias": (False,),
    "include_qkv_bias": (False,),
    "bias_for_layer_norm": (False, None),
    "layer_norm_with_affine": (True,),
    "multi_query_attention": (None, False),
    "scale_logits": (False,),
    "input_emb_norm": (False,),
    "clip_qkv": (None,),
    "block_group_size": (1,),
    "rope_full_precision": (True,),
}

# Fields that training code, HF bookkeeping or other runtimes use; harmless to us.
_IGNORED = {
    "alibi_bias_max",
    "attention_dropout",
    "attention_layer_norm_with_affine",
    "auto_map",
    "architectures",
    "embedding_dropout",
    "flash_attention",
    "init_cutoff_factor",
    "init_device",
    "init_fn",
    "init_std",
    "mlp_ratio",
    "precision",
    "residual_dropout",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "_name_or_path",
    "bos_token_id",
    "tie_word_embeddings",
    "model_type",
    "activation_checkpointing",
    "emb_init_std",
    "attention_type",
    "max_position_embeddings",
    "return_dict",
    "output_hidden_states",
}

_REQUIRED = ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length")


@dataclass
class LLaDAConfig:
    """Architecture and special ids of a LLaDA-family checkpoint (field names as in the published config)."""

    model_type: ClassVar[str] = "llada"
    d_model: int
    n_heads: int
    n_layers: int
    vocab_size: int
    max_sequence_length: int
    mlp_hidden_size: int
    n_kv_heads: int | None = None
    embedding_size: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int | None = None
    # a learned absolute position embedding added to the token embedding beside RoPE, scaled 1/(2√d) (the latent-
    # tokens paper's models); published LLaDA checkpoints have none, and their configs never carry the field
    absolute_position_embedding: bool = False

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json", strict: bool = True) -> LLaDAConfig:
        """Validate a raw config dict; every error names the field and ``source``."""
        model_type = raw.get("model_type")
        if model_type != "llada":
            raise CheckpointError(f"{source}: model_type is {model_type!r}, expected 'llada'")
        for name in _REQUIRED:
            if raw.get(name) is None:
                raise CheckpointError(f"{source}: missing required field '{name}'")
        check_llada_config(raw, source)
        for name, allowed in _FIXED_VALUES.items():
            if name in raw and raw[name] not in allowed:
                raise CheckpointError(
                    f"{source}: field '{name}' = {raw[name]!r} is not supported (supported: {allowed[0]!r})"
                )
        own = {f.name for f in fields(cls)}
        if strict:
            unknown = sorted(k for k in raw if k not in own and k not in _FIXED_VALUES and k not in _IGNORED)
            if unknown:
                raise CheckpointError(f"{source}: unknown config field '{unknown[0]}'")
        values = {k: raw[k] for k in own if k in raw and raw[k] is not None}
        if "mlp_hidden_size" not in values:
            if raw.get("mlp_ratio") is None:
                raise CheckpointError(f"{source}: missing required field 'mlp_hidden_size'")
            values["mlp_hidden_size"] = int(raw["mlp_ratio"] * raw["d_model"])
        config = cls(**values)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        for name in ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length", "mlp_hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise CheckpointError(f"{source}: field '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.absolute_position_embedding, bool):
            raise CheckpointError(f"{source}: field 'absolute_position_embedding' must be true or false")
        if self.d_model % self.n_heads:
            raise CheckpointError(f"{source}: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        assert self.n_kv_heads is not None and self.embedding_size is not None
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(f"{source}: n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.embedding_size < self.vocab_size:
            raise CheckpointError(f"{source}: embedding_size {self.embedding_size} < vocab_size {self.vocab_size}")
        if not 0 <= self.mask_token_id < self.embedding_size:
            raise CheckpointError(f"{source}: mask_token_id {self.mask_token_id} is outside the embedding table")
        if not 0 <= self.eos_token_id < self.embedding_size:
            raise CheckpointError(f"{source}: eos_token_id {self.eos_token_id} is outside the embedding table")

    @classmethod
    def from_json_file(cls, path: str | Path, strict: bool = True) -> LLaDAConfig:
        path = Path(path)
        raw = read_json_file(path, CheckpointError)
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, source=str(path), strict=strict)

    def to_dict(self) -> dict[str, Any]:
        """The published layout: our fields plus the fixed switches, so other LLaDA code can read it too."""
        out: dict[str, Any] = {"model_type": "llada", "architectures": ["LLaDAModelLM"]}
        out.update(asdict(self))
        if not self.absolute_position_embedding:
            del out["absolute_position_embedding"]
        out.update({name: allowed[0] for name, allowed in _FIXED_VALUES.items()})
        out["mlp_ratio"] = max(1, self.mlp_hidden_size // self.d_model)
        return out
