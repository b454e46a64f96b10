"""A tiny random DiffusionGemma built from transformers' own config classes (for tests and demos of the family)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    DiffusionGemmaTextConfig,
    PreTrainedTokenizerFast,
)


def tiny_diffusion_gemma(tokenizer: PreTrainedTokenizerFast, canvas_length: int = 8, seed: int = 0):
    """Two text layers (one sliding, one full attention), four experts, a one-layer vision tower; weights as
    transformers initialises them."""
    vocab = len(tokenizer)
    text = DiffusionGemmaTextConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        global_head_dim=16,
        max_position_embeddings=512,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    vision = dict(
        model_type="gemma4_vision",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        position_embedding_size=64,
    )
    config = DiffusionGemmaConfig(
        text_config=text.to_dict(),
        vision_config=vision,
        canvas_length=canvas_length,
        boi_token_id=vocab - 3,
        eoi_token_id=vocab - 2,
        image_token_id=vocab - 1,
    )
    torch.manual_seed(seed)
    return DiffusionGemmaForBlockDiffusion(config).eval()


def save_tiny_diffusion_gemma(directory: Path, model, tokenizer: PreTrainedTokenizerFast) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
