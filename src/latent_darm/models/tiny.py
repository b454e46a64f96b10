"""Small checkpoints in the real layouts, built locally: for tests, benchmarks and the toy world.

No weights can be downloaded here, so everything that loads real checkpoints is exercised on models that share
the exact architecture, file layout and tokenizer format of the published ones, only smaller and random.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from latent_darm.models.llada.checkpoint import save_llada
from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM

# Llama-3 / LLaDA-Instruct chat format: header tokens around the role, <|eot_id|> after each turn.
HEADER_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|pad|>",
    "<|mdm_mask|>",
]


def byte_level_bpe(corpus: Iterable[str], vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """A byte-level BPE trained on ``corpus``, the kind Llama-3 and Qwen2 (so LLaDA and Dream) ship; the special
    tokens take the first ids, in order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the LLaDA/Llama-3 special tokens and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, vocab_size, SPECIAL_TOKENS),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        mask_token="<|mdm_mask|>",
        additional_special_tokens=["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
        chat_template=HEADER_CHAT_TEMPLATE,
        padding_side="left",
    )


def tiny_llada_config(tokenizer: PreTrainedTokenizerFast, **overrides: int | float | bool) -> LLaDAConfig:
    """A small LLaDA config whose special ids come from ``tokenizer``."""
    values: dict = dict(
        d_model=64,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=128,
        vocab_size=len(tokenizer),
        max_sequence_length=512,
        rope_theta=500000.0,
        mask_token_id=tokenizer.convert_tokens_to_ids("<|mdm_mask|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def randomize_weights(model: torch.nn.Module, seed: int, std: float, norm_suffixes: tuple[str, ...]) -> None:
    """Seeded weights large enough that predictions are confident and varied: norm scales near 1, every other
    tensor (biases included) N(0, std²)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(norm_suffixes):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(std * torch.randn(param.shape, generator=generator))


def random_llada(config: LLaDAConfig, seed: int = 0, std: float = 0.2) -> LLaDAModelLM:
    """A LLaDA model with :func:`randomize_weights`."""
    model = LLaDAModelLM(config)
    randomize_weights(model, seed, std, ("norm.weight", "ln_f.weight"))
    return model.eval()


def save_llada_checkpoint(
    directory: Path, model: LLaDAModelLM, tokenizer: PreTrainedTokenizerFast, max_shard_bytes: int | None = None
) -> Path:
    """Write a complete planner directory: config, safetensors weights, tokenizer files."""
    save_llada(model, directory, max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(directory)
    return directory


# LLaDA's block weights under their names in transformers' Llama: the same block, without the causal mask.
LLADA_BLOCK_AS_LLAMA = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}


def random_llama(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 48,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    tie_word_embeddings: bool = True,
    seed: int = 0,
    std: float | None = None,
) -> LlamaForCausalLM:
    """A tiny random ``LlamaForCausalLM`` (the Llama-3.2 architecture, tied embeddings) for ``tokenizer``.

    ``std`` re-draws the weights at that scale: the default init (0.02) makes greedy decoding repeat one token,
    0.2 gives varied outputs that make equivalence tests meaningful.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        rope_theta=500000.0,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot_id|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    if std is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                scale = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
                param.copy_(
                    scale if name.endswith("norm.weight") else std * torch.randn(param.shape, generator=generator)
                )
    return model
