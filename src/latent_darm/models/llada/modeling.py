"""The LLaDA network: a Llama-style transformer with bidirectional attention.

Module and parameter names mirror the published checkpoints (``model.transformer.blocks.{i}.q_proj`` …), so a
state dict from ``model.safetensors`` loads with no renaming. Two extras serve the sampler:

* ``span``: run only the positions ``[start, end)`` of the canvas, reading the other positions' keys and values
  from a :class:`KVCache` filled by an earlier full pass (Fast-dLLM's approximate block cache);
* ``hidden_layer``: also return the hidden states of one layer (the plan latents).

Two optional inputs serve variants that reorder or drop positions (latent tokens, attention-pattern models):
``position_ids`` give each column its true RoPE position, ``attention_pattern`` says which query may attend to
which key. With neither, the forward pass is exactly the published model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.norm import RMSNorm  # computed in float32, cast back, then scaled (LLaDA's RMSLayerNorm)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables in float32 for absolute ``positions`` (rotate-half layout): [T, head_dim] for positions [T],
    [B, 1, T, head_dim] for per-row positions [B, T] (broadcast over heads)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    if angles.dim() == 3:
        angles = angles[:, None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, D] by the tables in float32 (LLaDA's ``rope_full_precision``)."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of every canvas position, per layer, [B, H_kv, T, D]: filled by a full pass, then span passes
    overwrite their columns in place. ``rows`` (cache row indices) restricts a span pass to some of the rows."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    rows: torch.Tensor | None = None


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm Llama block without a causal mask (checkpointed in training when the transformers wrapper,
    ``models/llada/hf.py``, has gradient checkpointing on; a plain module otherwise)."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        assert config.n_kv_heads is not None
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(config.n_heads * hd, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None,
        layer_idx: int,
        cache: KVCache | None,
        span: tuple[int, int] | None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if span is not None:
            # Only [start, end) is recomputed, written into the cache in place; the other positions' keys/values
            # are those of the pass that filled the cache.
            assert cache is not None
            start, end = span
            cached_k, cached_v = cache.keys[layer_idx], cache.values[layer_idx]
            if cache.rows is None:
                cached_k[:, :, start:end], cached_v[:, :, start:end] = k, v
                k, v = cached_k, cached_v
            else:
                cached_k[cache.rows, :, start:end], cached_v[cache.rows, :, start:end] = k, v
                k, v = cached_k[cache.rows], cached_v[cache.rows]
        elif cache is not None:
            cache.keys.append(k)
            cache.values.append(v)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=self.n_kv_heads != self.n_heads)
        x = x + self.attn_out(attn.transpose(1, 2).reshape(batch, length, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


@dataclass
class LLaDAOutput:
    """``logits`` [B, T', V] for the requested positions; ``hidden`` [B, T, d] from ``hidden_layer`` if asked."""

    logits: torch.Tensor | None
    last_hidden_state: torch.Tensor
    hidden: torch.Tensor | None = None


class LLaDATransformer(nn.Module):
    """Holds the checkpoint's ``transformer`` submodules under their published names."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        assert config.embedding_size is not None
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
        if config.absolute_position_embedding:
            self.wpe = nn.Embedding(config.max_sequence_length, config.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        self.ln_f = RMSNorm(config.d_model, config.rms_norm_eps)
        if not config.weight_tying:
            self.ff_out = nn.Linear(config.d_model, config.embedding_size, bias=False)


class LLaDAModel(nn.Module):
    """Wrapper whose only child is named ``transformer``, matching ``model.transformer.*`` in checkpoints."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = LLaDATransformer(config)


class LLaDAModelLM(nn.Module):
    """LLaDA mask predictor: token ids in, logits for every position out (no causal mask)."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LLaDAModel(config)

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer.wte.weight.dtype

    def input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] from final-normed hidden states [..., d]."""
        t = self.model.transformer
        if self.config.weight_tying:
            return F.linear(hidden, t.wte.weight)
        return t.ff_out(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        span: tuple[int, int] | None = None,
        hidden_layer: int | None = None,
        logits_slice: slice | None = slice(None),
        position_ids: torch.Tensor | None = None,
        attention_pattern: torch.Tensor | None = None,
    ) -> LLaDAOutput:
        """Run the network.

        ``input_ids`` is [B, T] — or, with ``span=(start, end)``, only the canvas columns ``[start, end)``, the rest
        coming from ``cache``. ``attention_mask`` is [B, T_canvas] with 1 for real tokens and 0 for padding; padded
        keys are masked out, positions stay absolute indices of the canvas (the reference's RoPE semantics).
        Passing an empty ``cache`` without ``span`` fills it. ``hidden_layer``: -1 = after the final norm (the
        vectors the LM head reads), k ≥ 0 = output of the first k blocks (0 = embeddings). ``logits_slice``
        selects the positions (of this call's columns) that get logits; ``None`` skips the LM head.

        ``position_ids`` ([T] or [B, T], this call's columns) replace the default positions, so columns may be
        reordered or dropped and keep their true RoPE positions. ``attention_pattern`` ([T, T] or [B, T, T],
        bool, True = the query row may attend to the key column) restricts attention further; it is combined with
        the padding mask, and every query must be allowed at least one key (itself, normally).
        """
        t = self.model.transformer
        start = 0 if span is None else span[0]
        length = input_ids.shape[1]
        if position_ids is None:
            positions = torch.arange(start, start + length, device=input_ids.device)
        else:
            positions = _check_position_ids(position_ids, input_ids.shape)
        cos, sin = rotary_tables(positions, self.config.head_dim, self.config.rope_theta)
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            attn_mask = attention_mask.bool()[:, None, None, :]
        if attention_pattern is not None:
            pattern = _check_attention_pattern(attention_pattern, input_ids.shape)
            attn_mask = pattern if attn_mask is None else attn_mask & pattern
        x = t.wte(input_ids)
        if self.config.absolute_position_embedding:  # gathered by the same (possibly reordered) position ids
            x = x + t.wpe(positions.expand(input_ids.shape[0], -1)) / (2 * math.sqrt(self.config.d_model))
        hidden = x if hidden_layer == 0 else None
        for i, block in enumerate(t.blocks):
            x = block(x, cos, sin, attn_mask, i, cache, span)
            if hidden_layer == i + 1:
                hidden = x
        x = t.ln_f(x)
        if hidden_layer is not None and hidden_layer < 0:
            hidden = x
        logits = None if logits_slice is None else self.lm_head(x[:, logits_slice])
        return LLaDAOutput(logits=logits, last_hidden_state=x, hidden=hidden)


def _check_position_ids(position_ids: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Validate ``position_ids`` against ``input_ids``' [B, T]; returns them on the input's terms."""
    batch, length = shape
    if position_ids.shape not in ((length,), (batch, length)):
        raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}; expected ({length},) or {batch, length}")
    return position_ids


def _check_attention_pattern(pattern: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Validate a boolean [T, T] or [B, T, T] pattern and shape it [B or 1, 1, T, T] for attention."""
    batch, length = shape
    if pattern.dtype != torch.bool:
        raise ValueError(f"attention_pattern must be boolean, got {pattern.dtype}")
    if pattern.shape not in ((length, length), (batch, length, length)):
        expected = f"({length}, {length}) or {batch, length, length}"
        raise ValueError(f"attention_pattern has shape {tuple(pattern.shape)}; expected {expected}")
    return pattern[None, None] if pattern.dim() == 2 else pattern[:, None]
