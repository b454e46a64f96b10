"""An independent, deliberately plain port of Dream-v0's official hub code for equivalence tests and benchmarks.

``ReferenceDream`` follows ``modeling_dream.py`` (SDPA attention with the official [B, 1, N, N] boolean mask,
``repeat_kv``, RoPE from ``inv_freq @ position_ids``); ``reference_diffusion_generate`` follows
``generation_utils.py``'s ``_sample`` line by line, drawing random numbers from the global torch RNG as the
official code does. Nothing is shared with ``latent_darm.models.dream``.
"""

from __future__ import annotations

import torch
import torch.distributions as dists
import torch.nn.functional as F


class ReferenceDream:
    """The official forward pass on a state dict with the checkpoint's names."""

    def __init__(self, state: dict[str, torch.Tensor], config) -> None:
        self.w, self.c = state, config
        self.layers = config.num_hidden_layers

    def _norm(self, x, weight):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c.rms_norm_eps)
        return weight * x.to(dtype)

    @staticmethod
    def _rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        c, w = self.c, self.w
        if isinstance(attention_mask, torch.Tensor) and not torch.any(attention_mask == 0.0):
            attention_mask = None
        bsz, q_len = input_ids.shape
        heads, kv, hd = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
        h = F.embedding(input_ids, w["model.embed_tokens.weight"])
        if position_ids is None:
            position_ids = torch.arange(q_len).unsqueeze(0)
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1) @ position_ids[:, None, :].float()
        emb = torch.cat((freqs.transpose(1, 2),) * 2, dim=-1)
        cos, sin = emb.cos().to(h.dtype)[:, None], emb.sin().to(h.dtype)[:, None]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            residual = h
            x = self._norm(h, w[p + "input_layernorm.weight"])
            q = F.linear(x, w[p + "self_attn.q_proj.weight"], w[p + "self_attn.q_proj.bias"])
            k = F.linear(x, w[p + "self_attn.k_proj.weight"], w[p + "self_attn.k_proj.bias"])
            v = F.linear(x, w[p + "self_attn.v_proj.weight"], w[p + "self_attn.v_proj.bias"])
            q = q.view(bsz, q_len, heads, hd).transpose(1, 2)
            k = k.view(bsz, q_len, kv, hd).transpose(1, 2)
            v = v.view(bsz, q_len, kv, hd).transpose(1, 2)
            q, k = q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin
            k = k[:, :, None].expand(bsz, kv, heads // kv, q_len, hd).reshape(bsz, heads, q_len, hd)
            v = v[:, :, None].expand(bsz, kv, heads // kv, q_len, hd).reshape(bsz, heads, q_len, hd)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=False)
            out = out.transpose(1, 2).reshape(bsz, q_len, -1)
            h = residual + F.linear(out, w[p + "self_attn.o_proj.weight"])
            residual = h
            x = self._norm(h, w[p + "post_attention_layernorm.weight"])
            gate = F.linear(x, w[p + "mlp.gate_proj.weight"])
            up = F.linear(x, w[p + "mlp.up_proj.weight"])
            h = residual + F.linear(F.silu(gate) * up, w[p + "mlp.down_proj.weight"])
        h = self._norm(h, w["model.norm.weight"])
        return F.linear(h, w["lm_head.weight"])


def top_p_logits(logits, top_p=None):
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > top_p
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask = mask.scatter_(-1, sorted_indices, sorted_indices_to_remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits, top_k=None):
    top_k = min(top_k, logits.size(-1))
    indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(indices_to_remove, torch.finfo(logits.dtype).min)


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            x0 = dists.Categorical(probs=probs).sample()
            confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except Exception:
            confidence, x0 = probs.max(dim=-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        log_probs = torch.log(probs + 1e-10)
        confidence = torch.sum(probs * log_probs, dim=-1)
    return confidence, x0


@torch.no_grad()
def reference_diffusion_generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens,
    mask_token_id,
    steps,
    eps=1e-3,
    alg="maskgit_plus",
    alg_temp=None,
    temperature=0.0,
    top_p=None,
    top_k=None,
):
    max_length = input_ids.shape[1] + max_new_tokens
    x = F.pad(input_ids, (0, max_length - input_ids.shape[1]), value=mask_token_id)
    if attention_mask is not None and torch.any(attention_mask == 0.0):
        attention_mask = F.pad(attention_mask, (0, max_length - attention_mask.shape[1]), value=1.0)
        tok_idx = attention_mask.long().cumsum(-1) - 1
        tok_idx.masked_fill_(attention_mask == 0, 1)
        attention_mask = torch.logical_and(
            attention_mask.unsqueeze(1).unsqueeze(-2),
            attention_mask.unsqueeze(1).unsqueeze(-1),
        )
    else:
        tok_idx = None
        attention_mask = None
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_token_id
        logits = model(x, attention_mask, tok_idx)
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        mask_logits = logits[mask_index]
        t = timesteps[i]
        s = timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_token_id
            transfer_index_t_s = torch.rand(*x0.shape) < p_transfer
            _, x0[transfer_index_t_s] = sample_tokens(
                mask_logits[transfer_index_t_s], temperature=temperature, top_p=top_p, top_k=top_k
            )
            x[mask_index] = x0.clone()
        else:
            if alg == "maskgit_plus":
                confidence, x0 = sample_tokens(mask_logits, temperature=temperature, top_p=top_p, top_k=top_k)
            elif alg == "topk_margin":
                confidence, x0 = sample_tokens(
                    mask_logits, temperature=temperature, top_p=top_p, top_k=top_k, margin_confidence=True
                )
            elif alg == "entropy":
                confidence, x0 = sample_tokens(mask_logits, temperature, top_p=top_p, top_k=top_k, neg_entropy=True)
            else:
                raise RuntimeError(f"Unknown alg: {alg}")
            num_mask_token = mask_index.sum() / mask_index.shape[0]
            number_transfer_tokens = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
            full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
            full_confidence[mask_index] = confidence
            if number_transfer_tokens > 0:
                if alg_temp is None or alg_temp == 0:
                    _, transfer_index = torch.topk(full_confidence, number_transfer_tokens)
                else:
                    full_confidence = full_confidence / alg_temp
                    full_confidence = F.softmax(full_confidence, dim=-1)
                    transfer_index = torch.multinomial(full_confidence, num_samples=number_transfer_tokens)
                x_ = torch.zeros_like(x, dtype=torch.long) + mask_token_id
                x_[mask_index] = x0.clone()
                row_indices = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
                x[row_indices, transfer_index] = x_[row_indices, transfer_index]
    return x
