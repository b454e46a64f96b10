"""The splice: soft tokens are read exactly like the tokens they embed, alone or in a left-padded batch, and greedy
decoding over the KV cache equals re-encoding the whole sequence at every step."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM, apply_repetition_penalty
from latent_darm.models.splice import PLAN_MARKER, left_pad, position_ids_from_mask, splice
from latent_darm.projector.model import Projector, ProjectorConfig
from tests.models.test_executor import PROMPTS, varied_llama


@pytest.fixture(scope="module")
def executor(tmp_path_factory, tokenizer) -> AutoregressiveLM:
    directory = tmp_path_factory.mktemp("splice") / "llama"
    varied_llama(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return AutoregressiveLM.from_pretrained(directory)


@pytest.fixture(scope="module")
def identity(executor) -> Projector:
    return Projector(ProjectorConfig(executor.hidden_size, executor.hidden_size, architecture="identity"))


def plan_ids(length: int, seed: int, vocab: int = 400) -> list[int]:
    return torch.randint(7, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def soft_tokens(executor: AutoregressiveLM, identity: Projector, ids: list[int]) -> torch.Tensor:
    """The executor's own embeddings of ``ids`` passed through the identity projector: [L, d]."""
    with torch.no_grad():
        return identity.project(executor.embed(ids)[None])[0]


def greedy_by_recomputation(
    executor: AutoregressiveLM, before: list[int], plan: list[int], after: list[int], steps: int, penalty: float
) -> list[int]:
    """The specification: no cache, the token sequence [before ; plan ; after ; generated] re-encoded at every step;
    the penalty covers the generated tokens only, never the prompt's or the plan's."""
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = executor.model(input_ids=torch.tensor([before + plan + after + generated])).logits[:, -1].float()
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[0, generated] = True
            token = int(apply_repetition_penalty(logits, seen, penalty).argmax())
            generated.append(token)
            if token in executor.stop_token_ids:
                break
    return generated


def test_positions_count_real_inputs_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    rows = [torch.ones(2, 3), torch.ones(4, 3)]
    embeds, mask, positions = left_pad(rows)
    assert embeds.shape == (2, 4, 3) and embeds[0, :2].abs().sum() == 0
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]] and positions[0].tolist() == [0, 0, 0, 1]
    assert splice(torch.zeros(2, 3), torch.ones(1, 3), torch.ones(4, 3)).shape == (7, 3)


def test_identity_soft_tokens_give_the_logits_of_the_tokens(executor, identity):
    """Required exactness: prefix soft tokens = embeddings of plan tokens placed before the prompt."""
    plans = [plan_ids(8, 0), plan_ids(3, 1)]
    prompts = [executor.chat_ids(PROMPTS[0]), executor.chat_ids(PROMPTS[1])]
    rows = [
        splice(soft_tokens(executor, identity, p), executor.embed([]), executor.embed(c))
        for p, c in zip(plans, prompts, strict=True)
    ]
    with torch.no_grad():
        embeds, mask, positions = left_pad(rows)
        batched = executor.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
        for i, (plan, prompt) in enumerate(zip(plans, prompts, strict=True)):
            tokens = executor.model(input_ids=torch.tensor([plan + prompt])).logits[0]
            alone = executor.model(inputs_embeds=rows[i][None]).logits[0]
            torch.testing.assert_close(alone, tokens, atol=1e-5, rtol=0)
            real = mask[i].bool()
            torch.testing.assert_close(batched[i, real], tokens, atol=1e-5, rtol=0)


def test_absolute_position_models_need_positions_from_the_mask(tokenizer):
    """Why the splice returns position ids. RoPE models (Llama) only see relative positions, so a row shifted by
    left padding gives the same logits; a model with learned absolute positions (GPT-2) does not, and a plain
    transformers forward numbers positions by index, pads included (only ``generate`` derives them from the mask)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=48, n_layer=2, n_head=4, initializer_range=0.2
    )
    executor = AutoregressiveLM(GPT2LMHeadModel(config), tokenizer)
    rows = [executor.embed(executor.chat_ids(PROMPTS[2])), executor.embed(executor.chat_ids(PROMPTS[1]))]
    embeds, mask, positions = left_pad(rows)
    with torch.no_grad():
        alone = executor.model(inputs_embeds=rows[0][None]).logits[0, -1]
        by_index = executor.model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1]
        by_mask = executor.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[0, -1]
    assert not torch.allclose(by_index, alone, atol=1e-2)
    torch.testing.assert_close(by_mask, alone, atol=1e-5, rtol=0)
    soft = 0.2 * torch.randn(len(PROMPTS), 4, 48, generator=torch.Generator().manual_seed(1))
    batched = executor.generate_from_embeddings(soft, PROMPTS, max_new_tokens=6, batch_size=5)
    alone_rows = [
        executor.generate_from_embeddings(s[None], [p], max_new_tokens=6)[0] for s, p in zip(soft, PROMPTS, strict=True)
    ]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone_rows]


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_cached_batched_generation_equals_recomputation_on_tokens(executor, identity, penalty):
    plans = [plan_ids(length, seed) for seed, length in enumerate([8, 3, 12, 0, 5])]
    soft = [soft_tokens(executor, identity, p) for p in plans]
    out = executor.generate_from_embeddings(soft, PROMPTS, max_new_tokens=8, repetition_penalty=penalty, batch_size=4)
    for plan, prompt, generation in zip(plans, PROMPTS, out, strict=True):
        expected = greedy_by_recomputation(executor, [], plan, executor.chat_ids(prompt), 8, penalty)
        assert generation.token_ids == expected
        assert generation.forward_passes == len(expected)
    alone = [
        executor.generate_from_embeddings([s], [p], max_new_tokens=8, repetition_penalty=penalty)[0]
        for s, p in zip(soft, PROMPTS, strict=True)
    ]
    assert [g.text for g in alone] == [g.text for g in out]


def test_an_empty_plan_is_the_text_path(executor):
    empty = torch.zeros(len(PROMPTS), 0, executor.hidden_size)
    from_embeddings = executor.generate_from_embeddings(empty, PROMPTS, max_new_tokens=6, repetition_penalty=1.3)
    from_text = executor.generate(PROMPTS, max_new_tokens=6, repetition_penalty=1.3)
    assert [g.token_ids for g in from_embeddings] == [g.token_ids for g in from_text]


def test_a_batch_tensor_and_a_list_agree_and_match_transformers_generate(executor):
    soft = 0.2 * torch.randn(3, 6, executor.hidden_size, generator=torch.Generator().manual_seed(0))
    prompts = PROMPTS[:3]
    as_tensor = executor.generate_from_embeddings(soft, prompts, max_new_tokens=8)
    as_list = executor.generate_from_embeddings(list(soft), prompts, max_new_tokens=8, batch_size=1)
    assert [g.token_ids for g in as_tensor] == [g.token_ids for g in as_list]
    # transformers' own generate with inputs_embeds derives positions from the mask too: same tokens
    rows = [
        splice(s, executor.embed([]), executor.embed(executor.chat_ids(p))) for s, p in zip(soft, prompts, strict=True)
    ]
    embeds, mask, _ = left_pad(rows)
    reference = executor.model.generate(
        inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=executor.pad_token_id
    )
    for generation, row in zip(as_tensor, reference.tolist(), strict=True):
        assert generation.token_ids == row[: len(generation.token_ids)]


def test_penalty_never_covers_soft_tokens(executor, identity):
    """Find a token t the model copies from a plan made only of t; a 10⁴ penalty keeps the copy because t has no
    id at a soft position, while penalising t would change the answer."""
    prompt = executor.chat_ids(PROMPTS[0])
    candidates = [t for t in range(7, 400) if t not in prompt]
    rows = [
        splice(soft_tokens(executor, identity, [t] * 6), executor.embed([]), executor.embed(prompt)) for t in candidates
    ]
    with torch.no_grad():
        embeds, mask, positions = left_pad(rows)
        logits = executor.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
    copied = [(t, row) for t, row in zip(candidates, logits, strict=True) if int(row.argmax()) == t]
    assert copied, "no token is copied from its plan; pick another seed"
    token, row = copied[0]
    seen = torch.zeros_like(row, dtype=torch.bool)
    seen[[*prompt, token]] = True
    assert int(apply_repetition_penalty(row[None], seen[None], 1e4).argmax()) != token
    soft = soft_tokens(executor, identity, [token] * 6)
    out = executor.generate_from_embeddings([soft], [PROMPTS[0]], max_new_tokens=1, repetition_penalty=1e4)
    assert out[0].token_ids == [token]


def test_inline_placement_puts_the_plan_at_the_marker(executor, identity):
    prompt = f"Hints: {PLAN_MARKER}\n\nQuestion: {PROMPTS[0]}"
    before, after = executor.plan_segments(prompt, "inline")
    assert before[0] == executor.tokenizer.bos_token_id
    assert executor.tokenizer.decode(after).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    plan = plan_ids(7, 3)
    soft = soft_tokens(executor, identity, plan)
    out = executor.generate_from_embeddings(
        [soft], [prompt], placement="inline", max_new_tokens=6, repetition_penalty=1.3
    )
    assert out[0].token_ids == greedy_by_recomputation(executor, before, plan, after, 6, 1.3)
    with pytest.raises(ConfigError, match="exactly once"):
        executor.generate_from_embeddings([soft], [PROMPTS[0]], placement="inline", max_new_tokens=2)
    with pytest.raises(ConfigError, match="exactly once"):
        executor.generate_from_embeddings([soft], [prompt + PLAN_MARKER], placement="inline", max_new_tokens=2)


def test_a_plan_longer_than_the_context_is_refused(executor):
    soft = torch.zeros(1, 1100, executor.hidden_size)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        executor.generate_from_embeddings(soft, ["question"], max_new_tokens=4)


@pytest.mark.parametrize(
    ("soft", "prompts", "kwargs", "match"),
    [
        (torch.zeros(0, 4, 48), [], {}, "no prompts"),
        (torch.zeros(1, 4, 48), [" "], {}, "prompt 0 is empty"),
        (torch.zeros(2, 4, 48), ["a"], {}, "2 soft-token sequences for 1 prompts"),
        (torch.zeros(1, 4, 32), ["a"], {}, "hidden size"),
        (torch.zeros(4, 48), ["a"], {}, r"\[B, L, d\]"),
        (torch.zeros(1, 4, 48), ["a"], {"placement": "suffix"}, "placement"),
    ],
)
def test_bad_requests(executor, soft, prompts, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        executor.generate_from_embeddings(soft, prompts, **{"max_new_tokens": 2, **kwargs})
