"""The Dream-v0 network: Qwen2 blocks with bidirectional attention, as a transformers ``PreTrainedModel``.

Module and parameter names are the official checkpoint's (``model.layers.{i}.self_attn.q_proj`` …, ``lm_head``),
so the published sharded safetensors load with no renaming and ``save_pretrained`` writes the same layout.
Numerics follow the official ``modeling_dream.py``: RMSNorm in float32, RoPE tables in float32 cast to the model
dtype, attention through SDPA. Padding: keys at padded positions are masked out and positions come from the
caller (the sampler passes ``cumsum(mask) − 1``, as the official code does); a padded *query* row attends to the
real keys instead of to nothing, which changes only that pad row's own (never used) output.

Extras for the sampler: ``prefix`` reads the keys/values of positions ``[0, prefix_len)`` from a
:class:`PrefixCache` instead of recomputing them (Fast-dLLM-style approximation), and the final-norm hidden
states are always returned (the plan latents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from latent_darm.models.dream.configuration import DreamConfig
from latent_darm.models.norm import RMSNorm  # Qwen2's: float32 RMS, cast back, then scaled


def rotary_tables(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, T, head_dim] for ``position_ids`` [B, T]: computed in float32, cast to ``dtype`` (official)."""
    device = position_ids.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on [B, H, T, D] with tables [B, T, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


@dataclass
class PrefixCache:
    """Keys and values [B, H_kv, P, D] of the first ``length`` positions, per layer, from one full pass."""

    length: int
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        layer: int,
        cache: PrefixCache | None,
        fill: bool,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            if fill:
                cache.keys.append(k[:, :, : cache.length])
                cache.values.append(v[:, :, : cache.length])
            else:
                k = torch.cat((cache.keys[layer], k), dim=2)
                v = torch.cat((cache.values[layer], v), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamDecoderLayer(GradientCheckpointingLayer):
    """One pre-norm Qwen2 block without a causal mask."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        layer: int,
        cache: PrefixCache | None = None,
        fill: bool = False,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, layer, cache, fill)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class DreamOutput(ModelOutput):
    """``logits`` [B, T, V] raw (unshifted: row i scores position i+1); ``last_hidden_state`` after the final norm;
    ``hidden_states`` every layer's input plus the final output when asked."""

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class DreamPreTrainedModel(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["DreamDecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)


class DreamBaseModel(DreamPreTrainedModel):
    """Embeddings, blocks and final norm, under the checkpoint's ``model.*`` names."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()


class DreamModel(DreamPreTrainedModel):
    """Dream mask predictor (the official class name, so ``architectures: ["DreamModel"]`` stays true)."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        cache: PrefixCache | None = None,
        fill_cache: bool = False,
        output_hidden_states: bool = False,
        logits_slice: slice | None = slice(None),
        **_: object,
    ) -> DreamOutput:
        """Run the network on [B, T] ids (or embeddings).

        ``attention_mask`` [B, T_keys] (1 real, 0 pad) masks padded keys; ``position_ids`` [B, T] default to
        0..T−1. With a filled ``cache`` the input is only the columns after the cached prefix, and the mask
        covers prefix and input. ``fill_cache`` keeps the prefix's keys/values of this full pass in ``cache``.
        ``logits_slice`` selects the rows that get logits; ``None`` skips the LM head.
        """
        base = self.model
        x = base.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = x.shape[:2]
        if position_ids is None:
            offset = 0 if cache is None or fill_cache else cache.length
            position_ids = torch.arange(offset, offset + length, device=x.device).expand(batch, -1)
        cos, sin = rotary_tables(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        states: list[torch.Tensor] = []
        for i, layer in enumerate(base.layers):
            if output_hidden_states:
                states.append(x)
            x = layer(x, cos, sin, mask, i, cache, fill_cache)
        x = base.norm(x)
        if output_hidden_states:
            states.append(x)
        logits = None if logits_slice is None else self.lm_head(x[:, logits_slice])
        return DreamOutput(logits=logits, last_hidden_state=x, hidden_states=tuple(states) if states else None)
