"""The executor wrapper: loading any HF causal LM, chat prompts, greedy decoding batched and alone, the penalty."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.autoregressive_lm import (
    PINNED_DATE,
    AutoregressiveLM,
    apply_repetition_penalty,
    count_generated_tokens,
    tokenizer_fingerprint,
)
from latent_darm.models.tiny import random_llama, train_bpe_tokenizer
from tests.conftest import CORPUS

PROMPTS = [
    "What is 3x + 7 = 22?",
    "A train travels 60 miles per hour for 3 hours. How far does it go? Multiply speed by time, then check.",
    "hi",
    "Natalia sold clips to 48 of her friends in April.",
    "Give only the final answer.",
]


def varied_llama(tokenizer, seed: int = 0, std: float = 0.2):
    """random_llama with weights large enough that greedy outputs vary (the default init repeats one token)."""
    return random_llama(tokenizer, seed=seed, std=std)


def test_opens_a_saved_llama_with_its_tokenizer(executor, executor_dir, tokenizer):
    assert executor.hidden_size == 48 and executor.context_length == 1024
    assert executor.dtype == torch.float32 and executor.device.type == "cpu"
    assert executor.tokenizer.padding_side == "left"
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert set(executor.stop_token_ids) == {tokenizer.eos_token_id, eot}
    assert executor.name_or_path == str(executor_dir)
    # The fingerprint is a property of the vocabulary, stable across save/load.
    assert executor.tokenizer_fingerprint() == tokenizer_fingerprint(tokenizer)
    assert len(executor.tokenizer_fingerprint()) == 16


def test_tokenizer_fingerprint_changes_with_the_vocabulary_and_specials_but_not_the_pad(tokenizer):
    """Compared with other tokenizers, not with itself: a constant fingerprint would fail here."""
    base = tokenizer_fingerprint(tokenizer)
    other_vocab = train_bpe_tokenizer(["a quite different corpus of words"] * 20, vocab_size=300)
    assert tokenizer_fingerprint(other_vocab) != base
    added = copy.deepcopy(tokenizer)
    added.add_tokens(["<|new_token|>"])
    assert tokenizer_fingerprint(added) != base
    other_eos = copy.deepcopy(tokenizer)
    other_eos.eos_token = "<|eot_id|>"
    assert tokenizer_fingerprint(other_eos) != base
    other_pad = copy.deepcopy(tokenizer)
    other_pad.pad_token = "<|eot_id|>"
    assert tokenizer_fingerprint(other_pad) == base  # a runtime choice, not something a model learned


def test_bad_directories_are_one_line_checkpoint_errors(tmp_path, executor_dir):
    with pytest.raises(CheckpointError, match="not found"):
        AutoregressiveLM.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no config.json"):
        AutoregressiveLM.from_pretrained(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    (bad / "model.safetensors").write_bytes((executor_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="cannot load") as info:
        AutoregressiveLM.from_pretrained(bad)
    assert "\n" not in str(info.value)


def test_chat_prompt_has_one_bos_an_empty_system_turn_and_the_assistant_header(executor, tokenizer):
    ids = executor.chat_ids("What is 2 + 2?")
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    text = tokenizer.decode(ids)
    assert text.startswith("<|startoftext|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>")
    assert text.endswith("What is 2 + 2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "system" not in tokenizer.decode(executor.chat_ids("What is 2 + 2?", system=None))


def test_templates_without_system_role_or_without_any_template(executor_dir, tokenizer):
    rejecting = AutoregressiveLM.from_pretrained(executor_dir)
    rejecting.tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        + tokenizer.chat_template
    )
    assert "system" not in tokenizer.decode(rejecting.chat_ids("hello"))
    raw = AutoregressiveLM.from_pretrained(executor_dir)
    raw.tokenizer.chat_template = None
    assert raw.chat_ids("hello") == [tokenizer.bos_token_id, *tokenizer("hello", add_special_tokens=False).input_ids]


def test_llama3_style_date_is_pinned(executor_dir):
    dated = AutoregressiveLM.from_pretrained(executor_dir)
    dated.tokenizer.chat_template = "{{ 'Today Date: ' + (date_string if date_string is defined else 'now') }}"
    assert dated.chat_text("x") == f"Today Date: {PINNED_DATE}"


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`:UserWarning")
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_with_kv_cache_matches_transformers_generate(executor, penalty):
    """The reference is ``generate`` from input embeddings, as the authors called it: its repetition penalty then
    covers the generated tokens only."""
    for prompt in PROMPTS[:3]:
        ids = torch.tensor([executor.chat_ids(prompt)])
        with torch.no_grad():
            embeds = executor.model.get_input_embeddings()(ids)
        reference = executor.model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            do_sample=False,
            repetition_penalty=penalty,
            pad_token_id=executor.pad_token_id,
        )[0].tolist()
        ours = executor.generate([prompt], max_new_tokens=10, repetition_penalty=penalty)[0]
        assert ours.token_ids == reference[: len(ours.token_ids)]
        assert ours.forward_passes == len(ours.token_ids) == ours.num_tokens


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_batched_equals_unbatched(executor, penalty):
    batched = executor.generate(PROMPTS, max_new_tokens=12, repetition_penalty=penalty, batch_size=4)
    alone = [executor.generate([p], max_new_tokens=12, repetition_penalty=penalty)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert len({tuple(g.token_ids) for g in batched}) > 1  # the model is not degenerate


def test_raw_prompts_without_chat_template(executor, tokenizer):
    out = executor.generate(PROMPTS[:2], max_new_tokens=5, chat=False)
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(PROMPTS[0], add_special_tokens=False).input_ids]])
    logits = executor.model(input_ids=ids).logits[0, -1]
    assert out[0].token_ids[0] == int(logits.argmax())


def test_the_kv_cache_is_passed_under_the_installed_transformers_keyword(executor):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40, inside our pin);
    5.0 knows only the old one. Generating must not use a deprecated keyword of the installed version."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert len(executor.generate(PROMPTS[:2], max_new_tokens=4)[0].token_ids) >= 1


def test_the_penalty_counts_generated_tokens_only(executor):
    """A strong penalty stops the answer repeating itself but leaves prompt tokens alone (the first token, with
    nothing generated before it, is the plain greedy one even when the prompt contains it)."""
    plain = executor.generate(PROMPTS, max_new_tokens=12)
    strong = executor.generate(PROMPTS, max_new_tokens=12, repetition_penalty=1e4)
    assert [g.token_ids for g in plain] != [g.token_ids for g in strong]
    for g in strong:
        assert len(set(g.token_ids)) == len(g.token_ids)
    assert [g.token_ids[0] for g in strong] == [g.token_ids[0] for g in plain]
    words = sorted({word for line in CORPUS for word in line.split()})
    prompts = [f"Say {word} {word} {word}" for word in words]
    firsts = [g.token_ids[0] for g in executor.generate(prompts, max_new_tokens=1, batch_size=16)]
    echoing = [p for p, t in zip(prompts, firsts, strict=True) if t in executor.chat_ids(p)]
    assert echoing, "no prompt whose first answer token is one of its own tokens; the test needs one"
    for prompt in echoing:
        plain_first = executor.generate([prompt], max_new_tokens=1)[0].token_ids
        assert executor.generate([prompt], max_new_tokens=1, repetition_penalty=1e4)[0].token_ids == plain_first


def test_penalty_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_stop_token_ends_a_row_and_is_counted(executor, tokenizer):
    free = executor.generate(PROMPTS, max_new_tokens=8)
    ids = free[0].token_ids
    k = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])  # a fresh token, to be made a stop token
    stop = ids[k]
    stopping = AutoregressiveLM(executor.model, executor.tokenizer)
    stopping.stop_token_ids = (*executor.stop_token_ids, stop)
    batched = stopping.generate(PROMPTS, max_new_tokens=8, batch_size=5)
    alone = [stopping.generate([p], max_new_tokens=8)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    first = batched[0]
    assert first.token_ids == ids[: k + 1] and first.forward_passes == k + 1
    assert first.text == tokenizer.decode(ids[:k], skip_special_tokens=True).strip()


def test_count_generated_tokens_includes_the_stop_token():
    assert count_generated_tokens([5, 6, 2, 7], [2]) == 3
    assert count_generated_tokens([5, 6], [2]) == 2
    assert count_generated_tokens([], [2]) == 0


@pytest.mark.parametrize(
    ("prompts", "kwargs", "match"),
    [
        ([], {}, "no prompts"),
        (["ok", "  "], {}, "prompt 1 is empty"),
        (["ok"], {"max_new_tokens": 0}, "max_new_tokens"),
        (["ok"], {"repetition_penalty": 0.0}, "repetition_penalty"),
        (["ok"], {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_requests(executor, prompts, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        executor.generate(prompts, **{"max_new_tokens": 4, **kwargs})


def test_prompt_longer_than_the_context(executor):
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        executor.generate(["word " * 1100], max_new_tokens=4)


def test_truncated_means_the_budget_ran_out_before_a_stop_token(executor):
    prompts = ["What is 3x + 7 = 22?", "A train travels 60 miles per hour.", "Natalia sold clips."]
    stops = set(executor.stop_token_ids)
    for budget in (1, 3, 12):
        for generation in executor.generate(prompts, max_new_tokens=budget):
            ended = bool(generation.token_ids) and generation.token_ids[-1] in stops
            assert generation.truncated == (not ended)
            assert not generation.truncated or len(generation.token_ids) == budget


def test_system_turn_setting(executor):
    """ "" (default): the paper authors' empty system turn; None: no system turn; text: that system turn."""
    assert executor.chat_text("Hi") == executor.chat_text("Hi", system="")
    assert "Be brief." in executor.chat_text("Hi", system="Be brief.")
    assert executor.chat_text("Hi", system=None) != executor.chat_text("Hi")
    ids = executor.generate(["Hi"], max_new_tokens=4, system="Be brief.")[0].token_ids
    embeds = executor.embed(executor.chat_ids("Hi", system="Be brief."))
    assert executor.greedy([embeds], 4) == [ids]


# ---- decoding that wastes nothing: finished rows leave, the cache is written in place -----------------------------


def random_qwen2(tokenizer, seed: int = 0, std: float = 0.2):
    """A tiny random Qwen2 (biased q/k/v projections, GQA, untied head): the architecture of Qwen2.5 and Dream."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            param.copy_(scale if name.endswith("norm.weight") else std * torch.randn(param.shape, generator=generator))
    return model


@torch.no_grad()
def carried_greedy(executor: AutoregressiveLM, rows, max_new_tokens: int, penalty: float = 1.0) -> list[list[int]]:
    """The executor's greedy loop before finished rows left the batch: every row in every pass, transformers' own
    concatenating cache (the tokens the new loop must reproduce)."""
    from latent_darm.models.splice import left_pad

    embeds, mask, positions = left_pad(rows)
    out = executor._forward(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    batch = len(rows)
    penalised = torch.zeros((batch, out.logits.shape[-1]), dtype=torch.bool)
    stops = torch.tensor(executor.stop_token_ids)
    done = torch.zeros(batch, dtype=torch.bool)
    steps = []
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if penalty != 1.0:
            logits = apply_repetition_penalty(logits, penalised, penalty)
        token = logits.argmax(-1).masked_fill(done, executor.pad_token_id)
        steps.append(token)
        penalised[torch.arange(batch), token] = True
        done |= torch.isin(token, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = executor._forward(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                                **{executor._cache_kwarg: executor._cache_of(out)})  # fmt: skip
    generated = torch.stack(steps, dim=1).tolist()
    return [row[: count_generated_tokens(row, executor.stop_token_ids)] for row in generated]


def stopping_executor(model, tokenizer, prompts, budget: int) -> AutoregressiveLM:
    """An executor whose stop tokens make the rows of ``prompts`` finish at different steps: for each prompt but
    the last, a token its free answer produces for the first time at a different position becomes a stop token (one
    the last prompt's answer never produces, so that row runs to the budget)."""
    executor = AutoregressiveLM(model, tokenizer)
    free = executor.generate(prompts, max_new_tokens=budget, batch_size=len(prompts))
    stops = set(executor.stop_token_ids)
    last = set(free[-1].token_ids)
    for i, generation in enumerate(free[:-1]):
        ids = generation.token_ids
        fresh = [t for k, t in enumerate(ids) if k > i and t not in ids[:k] and t not in stops | last]
        if fresh:
            stops.add(fresh[0])
    executor.stop_token_ids = tuple(sorted(stops))
    return executor


def reference_generate(executor: AutoregressiveLM, embeds: torch.Tensor, budget: int, penalty: float) -> list[int]:
    """transformers' ``generate`` from input embeddings, greedy, one row, cut after the first stop token."""
    with torch.no_grad():
        out = executor.model.generate(
            inputs_embeds=embeds[None], attention_mask=torch.ones((1, embeds.shape[0]), dtype=torch.long),
            max_new_tokens=budget, do_sample=False, repetition_penalty=penalty,
            eos_token_id=list(executor.stop_token_ids), pad_token_id=executor.pad_token_id,
        )[0].tolist()  # fmt: skip
    return out[: count_generated_tokens(out, executor.stop_token_ids)]


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`:UserWarning")
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_rows_leave_the_batch_when_done_and_the_tokens_do_not_change(tokenizer, architecture, penalty):
    model = (varied_llama(tokenizer, seed=3) if architecture == "llama" else random_qwen2(tokenizer, seed=3)).eval()
    budget = 14
    executor = stopping_executor(model, tokenizer, PROMPTS, budget)
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: sizes.append((kwargs.get("input_ids", kwargs.get("inputs_embeds"))).shape[0]),
        with_kwargs=True,
    )
    try:
        batched = executor.generate(PROMPTS, max_new_tokens=budget, repetition_penalty=penalty, batch_size=5)
    finally:
        hook.remove()
    lengths = sorted(len(g.token_ids) for g in batched)
    assert len(set(lengths)) >= 3 and lengths[-1] == budget  # rows finish at different steps
    # One pass per step of the longest row, each over the rows still decoding: the batch shrinks as rows finish.
    assert len(sizes) == budget and sizes[0] == 5 and sizes == sorted(sizes, reverse=True) and sizes[-1] < 5
    assert sizes == [sum(n > step for n in lengths) for step in range(budget)]

    with torch.no_grad():
        rows = [executor.embed(executor.chat_ids(p)) for p in PROMPTS]
    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])  # the batch generate() forms
    before = carried_greedy(executor, [rows[i] for i in order], budget, penalty)
    assert [batched[i].token_ids for i in order] == before  # today's loop, finished rows carried along
    alone = [executor.generate([p], max_new_tokens=budget, repetition_penalty=penalty)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.token_ids for g in batched] == [reference_generate(executor, r, budget, penalty) for r in rows]


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_soft_token_rows_with_left_padding_equal_transformers_generate(tokenizer, architecture):
    """The latent pipeline's inputs: soft tokens spliced into chat prompts of different lengths, batched (left
    padding) with rows finishing early, equal transformers' ``generate`` on each spliced row alone."""
    model = varied_llama(tokenizer, seed=5) if architecture == "llama" else random_qwen2(tokenizer, seed=5)
    budget = 12
    executor = stopping_executor(model, tokenizer, PROMPTS, budget)
    generator = torch.Generator().manual_seed(0)
    soft = [torch.randn(n, executor.hidden_size, generator=generator) for n in (3, 8, 1, 5, 2)]
    batched = executor.generate_from_embeddings(soft, PROMPTS, max_new_tokens=budget, batch_size=5)
    assert len({len(g.token_ids) for g in batched}) >= 2
    with torch.no_grad():
        spliced = [torch.cat([s, executor.embed(executor.chat_ids(p))]) for s, p in zip(soft, PROMPTS, strict=True)]
    assert [g.token_ids for g in batched] == [reference_generate(executor, r, budget, 1.0) for r in spliced]


def test_the_cache_is_written_in_place(executor):
    """Between rows leaving, a step writes one position into the preallocated buffers; it copies nothing else."""
    from latent_darm.models.autoregressive_lm import PreallocatedLayer

    cache = executor._new_cache(40)
    assert cache is not None and len(cache.layers) == executor.model.config.num_hidden_layers
    layer = cache.layers[0]
    assert isinstance(layer, PreallocatedLayer)
    keys, values = torch.randn(3, 2, 5, 12), torch.randn(3, 2, 5, 12)
    layer.update(keys, values)
    buffer = layer._keys.data_ptr()
    step_keys, step_values = torch.randn(3, 2, 1, 12), torch.randn(3, 2, 1, 12)
    got_keys, got_values = layer.update(step_keys, step_values)
    assert layer._keys.data_ptr() == buffer and got_keys.data_ptr() == buffer  # a view, not a new tensor
    assert torch.equal(got_keys, torch.cat([keys, step_keys], dim=2))
    assert torch.equal(got_values, torch.cat([values, step_values], dim=2))
    layer.batch_select_indices(torch.tensor([0, 2]))
    assert torch.equal(layer.keys, torch.cat([keys, step_keys], dim=2)[[0, 2]]) and layer.get_seq_length() == 6
    with pytest.raises(RuntimeError, match="40 positions"):
        layer.update(torch.randn(2, 2, 35, 12), torch.randn(2, 2, 35, 12))
