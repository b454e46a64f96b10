"""Toy planner and executor: the real architectures (LLaDA, Llama-3.2 with tied embeddings) at tiny size, fresh
or — for the planner — started from the trained executor's weights."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from latent_darm.errors import ConfigError
from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.tiny import LLADA_BLOCK_AS_LLAMA
from latent_darm.toy.world import ModelSpec

MAX_POSITIONS = 512


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int]:
    return tokenizer.convert_tokens_to_ids("<|mdm_mask|>"), tokenizer.eos_token_id, tokenizer.pad_token_id


def init_weights(model: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """GPT-style init: N(0, std) everywhere, output projections of each block scaled by 1/√(2·layers) so the
    residual stream does not grow with depth; norms at one. (The toy models use a larger ``std``, see
    :class:`ModelSpec`.)"""
    out_std = std / math.sqrt(2 * n_layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim < 2:
                param.fill_(1.0)
            elif name.endswith(("attn_out.weight", "ff_out.weight", "o_proj.weight", "down_proj.weight")) and (
                "blocks" in name or "layers" in name
            ):
                param.normal_(0.0, out_std)
            else:
                param.normal_(0.0, std)


def new_planner(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> LLaDAModelLM:
    """An untrained LLaDA mask predictor (untied LM head, as LLaDA-8B) for ``tokenizer``."""
    mask, eos, pad = _special_ids(tokenizer)
    config = LLaDAConfig(
        d_model=spec.d_model,
        n_heads=spec.heads,
        n_kv_heads=spec.kv_heads,
        n_layers=spec.layers,
        mlp_hidden_size=spec.mlp_hidden,
        vocab_size=len(tokenizer),
        max_sequence_length=MAX_POSITIONS,
        rope_theta=10000.0,
        mask_token_id=mask,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    init_weights(model, spec.layers, spec.init_std)
    return model


def new_executor(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """An untrained ``LlamaForCausalLM`` (tied embeddings, as Llama-3.2) that stops at EOS or ``<|eot_id|>``."""
    _, eos, pad = _special_ids(tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.d_model,
        intermediate_size=spec.mlp_hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eos, eot],
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    init_weights(model, spec.layers, spec.init_std)
    model.generation_config.eos_token_id = [eos, eot]
    model.generation_config.pad_token_id = pad
    return model


def planner_from_executor(
    executor: LlamaForCausalLM, spec: ModelSpec, tokenizer: PreTrainedTokenizerBase
) -> LLaDAModelLM:
    """A LLaDA mask predictor of size ``spec`` holding a trained causal executor's weights (the same block without
    the causal mask), as diffusion LMs such as Dream and DiffuLLaMA start from autoregressive checkpoints.

    The executor's blocks come first; ``spec.layers`` beyond them are extra blocks whose output projections are
    zero, so they start as the identity and the planner starts out computing what the executor computes. The
    executor has learned to look up the arrow out of a path step at that step's position; diffusion fine-tuning
    then mainly has to move that result one position on (a masked position predicts itself, not its successor),
    which the extra block has room for. The LM head starts as the executor's tied embedding.
    """
    c = executor.config
    executor_sizes = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size)
    if (spec.d_model, spec.heads, spec.kv_heads, spec.mlp_hidden) != executor_sizes or spec.layers < len(
        executor.model.layers
    ):
        raise ConfigError(f"planner spec {spec} does not fit an executor of sizes {executor_sizes}")
    planner = new_planner(spec, tokenizer, seed=0)
    llama = executor.model
    t = planner.model.transformer
    with torch.no_grad():
        t.wte.weight.copy_(llama.embed_tokens.weight)
        t.ff_out.weight.copy_(executor.get_output_embeddings().weight)
        t.ln_f.weight.copy_(llama.norm.weight)
        for block, layer in zip(t.blocks, llama.layers, strict=False):
            for ours, theirs in LLADA_BLOCK_AS_LLAMA.items():
                getattr(block, ours).weight.copy_(layer.get_submodule(theirs).weight)
        for block in t.blocks[len(llama.layers) :]:
            block.attn_out.weight.zero_()
            block.ff_out.weight.zero_()
    return planner
