"""The LLaDA forward pass is a Llama block stack without the causal mask, with padded keys masked out."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import KVCache
from latent_darm.models.tiny import LLADA_BLOCK_AS_LLAMA, random_llada


def _as_bidirectional_llama(model) -> LlamaForCausalLM:
    """Copy LLaDA weights into transformers' Llama, an independent implementation of the same block."""
    c = model.config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.embedding_size,
            hidden_size=c.d_model,
            intermediate_size=c.mlp_hidden_size,
            num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads,
            num_key_value_heads=c.n_kv_heads,
            rope_theta=c.rope_theta,
            rms_norm_eps=c.rms_norm_eps,
            tie_word_embeddings=False,
            attn_implementation="eager",
        )
    ).eval()
    t = model.model.transformer
    state = {
        "model.embed_tokens.weight": t.wte.weight,
        "model.norm.weight": t.ln_f.weight,
        "lm_head.weight": t.ff_out.weight,
    }
    for i, block in enumerate(t.blocks):
        for ours, theirs in LLADA_BLOCK_AS_LLAMA.items():
            state[f"model.layers.{i}.{theirs}.weight"] = getattr(block, ours).weight
    llama.load_state_dict(state, strict=True)
    for layer in llama.model.layers:
        layer.self_attn.is_causal = False
    return llama


def test_matches_transformers_llama_without_causal_mask_on_padded_batches():
    config = LLaDAConfig(
        d_model=64,
        n_heads=4,
        n_kv_heads=2,
        n_layers=3,
        vocab_size=90,
        max_sequence_length=128,
        mlp_hidden_size=96,
        rope_theta=500000.0,
    )
    model = random_llada(config, seed=3)
    llama = _as_bidirectional_llama(model)
    generator = torch.Generator().manual_seed(0)
    for trial in range(5):
        length = 5 + 4 * trial
        ids = torch.randint(0, 90, (3, length), generator=generator)
        mask = torch.ones(3, length, dtype=torch.long)
        mask[0, : trial + 1] = 0
        mask[2, :2] = 0
        additive = torch.zeros(3, 1, length, length)
        additive.masked_fill_(mask[:, None, None, :] == 0, float("-inf"))
        expected = llama(input_ids=ids, attention_mask=additive).logits
        got = model(ids, mask).logits
        real = mask.bool()
        assert torch.allclose(got[real], expected[real], atol=1e-4), trial


def test_hidden_layer_selection(llada_model):
    ids = torch.randint(0, 300, (2, 9))
    out = llada_model(ids, hidden_layer=-1)
    assert torch.equal(out.hidden, out.last_hidden_state)
    assert torch.allclose(llada_model.lm_head(out.hidden), out.logits)
    embeddings = llada_model(ids, hidden_layer=0).hidden
    assert torch.equal(embeddings, llada_model.input_embeddings()(ids))
    first_block = llada_model(ids, hidden_layer=1).hidden
    assert not torch.allclose(first_block, embeddings) and not torch.allclose(first_block, out.hidden)


def test_cached_span_pass_equals_full_pass_when_nothing_changed(llada_model):
    """The block cache is exact when the cached positions did not change: only its staleness approximates."""
    ids = torch.randint(0, 300, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    cache = KVCache()
    full = llada_model(ids, mask, cache=cache)
    for span in [(8, 12), (8, 20), (0, 20)]:
        part = llada_model(ids[:, span[0] : span[1]], mask, cache=cache, span=span)
        assert torch.allclose(part.logits, full.logits[:, span[0] : span[1]], atol=1e-5)
    assert len(cache.keys) == llada_model.config.n_layers


def _small_llada():
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, vocab_size=90, max_sequence_length=64, mlp_hidden_size=96
    )
    return random_llada(config, seed=5)


def test_default_positions_and_an_all_true_pattern_are_the_plain_forward_bit_for_bit():
    model = _small_llada()
    ids = torch.randint(0, 90, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    plain = model(ids, mask).logits
    explicit = model(
        ids,
        mask,
        position_ids=torch.arange(11).expand(2, 11),
        attention_pattern=torch.ones(2, 11, 11, dtype=torch.bool),
    ).logits
    assert torch.equal(plain, explicit)


def test_reordered_columns_with_their_true_positions_give_the_same_predictions():
    model = _small_llada()
    ids = torch.randint(0, 90, (2, 13), generator=torch.Generator().manual_seed(2))
    order = torch.randperm(13, generator=torch.Generator().manual_seed(3))
    plain = model(ids).logits
    shuffled = model(ids[:, order], position_ids=order).logits
    assert torch.allclose(shuffled, plain[:, order], atol=1e-5)
    # Per-row positions: each row its own order.
    order2 = torch.randperm(13, generator=torch.Generator().manual_seed(4))
    rows = torch.stack((order, order2))
    per_row = model(torch.gather(ids, 1, rows), position_ids=rows).logits
    assert torch.allclose(per_row[1], plain[1, order2], atol=1e-5)


def test_a_pattern_that_hides_columns_equals_dropping_them():
    """Hiding keys from every query is the same computation as leaving those columns out (true positions kept)."""
    model = _small_llada()
    ids = torch.randint(0, 90, (1, 12), generator=torch.Generator().manual_seed(5))
    keep = torch.tensor([0, 1, 2, 5, 6, 9, 11])
    pattern = torch.zeros(12, 12, dtype=torch.bool)
    pattern[:, keep] = True
    hidden = model(ids, attention_pattern=pattern).logits[:, keep]
    dropped = model(ids[:, keep], position_ids=keep).logits
    assert torch.allclose(hidden, dropped, atol=1e-5)


def test_a_causal_pattern_is_transformers_llama_with_its_causal_mask():
    model = _small_llada()
    llama = _as_bidirectional_llama(model)
    for layer in llama.model.layers:
        layer.self_attn.is_causal = True
    ids = torch.randint(0, 90, (2, 10), generator=torch.Generator().manual_seed(6))
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    additive = torch.zeros(2, 1, 10, 10).masked_fill(~causal, float("-inf"))
    expected = llama(input_ids=ids, attention_mask=additive).logits
    got = model(ids, attention_pattern=causal).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, model(ids).logits, atol=1e-3)


def test_bad_position_ids_and_patterns_name_the_argument():
    model = _small_llada()
    ids = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=torch.arange(5))
    with pytest.raises(ValueError, match="attention_pattern.*boolean"):
        model(ids, attention_pattern=torch.ones(6, 6))
    with pytest.raises(ValueError, match="attention_pattern has shape"):
        model(ids, attention_pattern=torch.ones(3, 6, 6, dtype=torch.bool))
