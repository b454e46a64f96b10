"""A tiny random Dream checkpoint in the official hub layout, written without our own save code.

``config.json`` carries the published fields (``model_type "Dream"``, ``architectures ["DreamModel"]``, the
remote-code ``auto_map`` we never follow), weights use the Qwen2 names in sharded safetensors with an index, and
the tokenizer has Dream's special tokens (``<|endoftext|>`` as bos/eos/pad, ``<|mask|>``) and Qwen2 chat template.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast

from latent_darm.models.dream.configuration import DreamConfig
from latent_darm.models.dream.modeling import DreamModel
from latent_darm.models.tiny import byte_level_bpe, randomize_weights

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]


def train_dream_tokenizer(corpus: Iterable[str], vocab_size: int = 400, mask: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Dream's special tokens and chat template (``mask=False``: without the mask token)."""
    extra: dict[str, Any] = {"mask_token": "<|mask|>"} if mask else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, vocab_size, SPECIAL_TOKENS),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=QWEN2_CHAT_TEMPLATE,
        padding_side="left",
        **extra,
    )


def tiny_dream_config(tokenizer: PreTrainedTokenizerFast, **overrides: Any) -> DreamConfig:
    values: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=1_000_000.0,
        mask_token_id=tokenizer.convert_tokens_to_ids("<|mask|>"),
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    values.update(overrides)
    return DreamConfig(**values)


def random_dream(config: DreamConfig, seed: int = 0, std: float = 0.2) -> DreamModel:
    """A Dream model with :func:`~latent_darm.models.tiny.randomize_weights`."""
    model = DreamModel(config)
    randomize_weights(model, seed, std, ("norm.weight",))
    return model.eval()


def official_config(config: DreamConfig) -> dict[str, Any]:
    """config.json as the hub's Dream-v0 checkpoints have it (field set and order of the published file)."""
    return {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "hidden_act": "silu",
        "hidden_size": config.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": config.intermediate_size,
        "mask_token_id": config.mask_token_id,
        "max_position_embeddings": config.max_position_embeddings,
        "max_window_layers": config.num_hidden_layers,
        "model_type": "Dream",
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": config.num_key_value_heads,
        "pad_token_id": config.pad_token_id,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": config.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": config.vocab_size,
    }


def save_official_layout(
    directory: Path, model: DreamModel, tokenizer: PreTrainedTokenizerFast, shards: int = 2
) -> Path:
    """config.json, ``model-0000i-of-0000n.safetensors`` shards + index, tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(official_config(model.config), indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    names = list(state)
    weight_map: dict[str, str] = {}
    per_shard = -(-len(names) // shards)
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {n: state[n] for n in names[i * per_shard : (i + 1) * per_shard]}
        save_file(chunk, str(directory / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, shard))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    tokenizer.save_pretrained(directory)
    return directory
