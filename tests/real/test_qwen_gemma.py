"""Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270M, assembled from their part packages: the project's greedy decoding
equals transformers' (float32, alone and batched with rows finishing at different steps), and the latent channel
trains on Qwen's real embedding scale, tokenizer and chat template (see conftest for how the models are found)."""

from __future__ import annotations

import hashlib
import json
import random

import torch
from accelerate.state import AcceleratorState, GradientState

from latent_darm.models.autoregressive_lm import count_generated_tokens
from latent_darm.models.gguf_parts import ASSEMBLIES
from tests.real.test_smollm import reference_greedy

# The first stops after 10 tokens ("7 + 5 equals 12." + <|im_end|>), the second after 2 ("Paris" + <|im_end|>): in
# the batch the second row leaves after its second token while the first goes on.
QWEN_QUESTIONS = ["What is 7 + 5?", "What is the capital of France? Answer in one word."]


def test_the_assembled_file_is_the_published_one_and_fetch_gguf_finds_it(darm, qwen_gguf):
    assembly = ASSEMBLIES["qwen2.5-coder-0.5b"]
    assert qwen_gguf.stat().st_size == assembly.size
    code, _, err = darm("fetch-gguf", "qwen2.5-coder-0.5b", "--out", qwen_gguf)  # checks the sha256 again
    assert code == 0 and "already there, sha256 checked" in err, err


def test_qwen_reads_its_own_chatml_template_and_stops_at_im_end(qwen):
    assert (
        qwen.chat_text("Hi")
        == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen.tokenizer.convert_ids_to_tokens(list(qwen.stop_token_ids)) == ["<|im_end|>"]
    assert qwen.hidden_size == 896 and qwen.model.config.model_type == "qwen2"


def test_qwen_greedy_batched_equals_transformers_generate_alone(qwen):
    budget = 12
    expected = [reference_greedy(qwen, qwen.chat_text(q), budget) for q in QWEN_QUESTIONS]
    batched = qwen.generate(QWEN_QUESTIONS, max_new_tokens=budget, batch_size=2)
    assert [g.token_ids for g in batched] == expected  # each row as transformers decodes it alone
    assert [len(ids) for ids in expected] == [10, 2] and not any(g.truncated for g in batched)
    assert "12" in batched[0].text and batched[1].text == "Paris"


def test_gemma_greedy_batched_equals_transformers_generate_alone(gemma):
    assert gemma.model.config.model_type.startswith("gemma3") and gemma.tokenizer.chat_template is None
    prompts = ["The capital of France is", "def fibonacci(n):"]
    budget = 8
    expected = []
    for prompt in prompts:
        ids = torch.tensor([gemma.prompt_ids(prompt, chat=False)])
        with torch.no_grad():
            out = gemma.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=budget, eos_token_id=list(gemma.stop_token_ids),
                                       pad_token_id=gemma.pad_token_id)[0, ids.shape[1]:].tolist()  # fmt: skip
        expected.append(out[: count_generated_tokens(out, gemma.stop_token_ids)])
    batched = gemma.generate(prompts, max_new_tokens=budget, batch_size=2, chat=False)
    assert [g.token_ids for g in batched] == expected  # each row as transformers decodes it alone
    assert "France" in batched[0].text or "Paris" in batched[0].text


def test_a_projector_learns_to_write_into_qwens_embeddings(qwen, llada_dir, tmp_path):
    """The latent channel on a real executor: a tiny random LLaDA's plan latents, projected into Qwen's input
    embeddings (its scale, its tokenizer, its ChatML prompt), trained a few steps: the held-out loss falls."""
    from latent_darm.models.diffusion_lm import DiffusionLM
    from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
    from latent_darm.pipelines.prompts import PromptTemplates
    from latent_darm.projector.model import Projector
    from latent_darm.training.data import TrainingExample, example_id
    from latent_darm.training.latent_cache import build_latent_cache
    from latent_darm.training.projector_trainer import ProjectorTrainingConfig, train_projector

    rng = random.Random(0)
    pairs = [(rng.randint(2, 40), rng.randint(2, 40)) for _ in range(16)]
    examples = [TrainingExample(example_id("sums", f"What is {a} + {b}?"), f"What is {a} + {b}?", str(a + b),
                                "integer", "sums") for a, b in pairs]  # fmt: skip
    train, held_out = examples[:12], examples[12:]
    planner = DiffusionLM.from_pretrained(llada_dir)
    sampler = LLaDASamplerConfig(gen_length=8, block_length=8, steps=8, hidden_layer=-1)
    templates = PromptTemplates(executor_latent="{question}")  # a short prompt: each step is a 0.5B backward pass
    cache = build_latent_cache(planner, examples, tmp_path / "latents", sampler, templates, batch_size=8)
    torch.manual_seed(0)
    projector = Projector.for_pair(planner, qwen, plan_length=8, hidden_dim=64)
    scale = qwen.input_embeddings.weight.pow(2).mean().sqrt()
    config = ProjectorTrainingConfig(
        lr=3e-3, warmup_steps=1, epochs=10, batch_size=2, max_steps=4, eval_every=2, save_every=100,
        mixed_precision="no", max_new_tokens=2, eval_batch_size=4,
    )  # fmt: skip
    before = {name: hashlib.sha256(t.numpy().tobytes()).hexdigest() for name, t in
              list(qwen.model.state_dict().items())[:3]}  # fmt: skip
    try:
        summary = train_projector(
            projector, qwen, cache, train, held_out, tmp_path / "run", config, templates=templates, progress=False
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        qwen.model.eval()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    validated = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in validated] == [0, 2, 4] and summary.steps == 4
    assert validated[-1]["val_loss"] < validated[0]["val_loss"]
    # The executor stays frozen; the projector's output starts at Qwen's embedding scale (RMS ≈ 0.02, not 1).
    after = {name: hashlib.sha256(t.numpy().tobytes()).hexdigest() for name, t in
             list(qwen.model.state_dict().items())[:3]}  # fmt: skip
    assert after == before
    with torch.no_grad():
        soft = projector(cache.load([e.id for e in held_out]).float())
    assert 0.2 * scale < soft.pow(2).mean().sqrt() < 5 * scale
