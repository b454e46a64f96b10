"""SmolLM2-135M-Instruct end to end: the project's decoding equals transformers', the prompt is the model's own chat
template, and every command runs on a real pretrained model (see conftest for how the model is found)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.gguf import is_gguf_model
from latent_darm.pipelines.prompts import PromptTemplates

# Prompts of different lengths (the batch is left-padded); at the budget of 12 tokens the first two are cut off and
# the third stops by itself after 8 ("The capital of France is Paris."), while the others go on decoding beside it.
QUESTIONS = [
    "What is 7 + 5?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is the capital of France? Answer in one word.",
]
SMOL_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def reference_greedy(executor: AutoregressiveLM, prompt_text: str, max_new_tokens: int) -> list[int]:
    """Plain transformers ``generate`` (greedy) on the rendered prompt, one prompt, no padding; cut after the first
    stop token as the project counts."""
    ids = executor.tokenizer(prompt_text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = executor.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(executor.stop_token_ids),
            pad_token_id=executor.pad_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    stops = set(executor.stop_token_ids)
    cut = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
    return new[:cut]


def test_chat_template_is_the_models_own(smollm):
    template = smollm.tokenizer.chat_template
    assert "<|im_start|>" in template and SMOL_DEFAULT_SYSTEM in template
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    expected = smollm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert smollm.chat_text("Hi") == expected == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
        "<|im_start|>assistant\n"  # fmt: skip
    # No system turn: the template's own default system prompt appears; a given one replaces it.
    assert SMOL_DEFAULT_SYSTEM in smollm.chat_text("Hi", system=None)
    own = smollm.chat_text("Hi", system="Be brief.")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in own and SMOL_DEFAULT_SYSTEM not in own
    assert "<|im_end|>" in [smollm.tokenizer.convert_ids_to_tokens(i) for i in smollm.stop_token_ids]


def test_greedy_equals_transformers_generate_alone_and_batched(smollm):
    budget = 12
    prompts = [smollm.chat_text(q) for q in QUESTIONS]
    expected = [reference_greedy(smollm, p, budget) for p in prompts]
    alone = [smollm.generate([q], max_new_tokens=budget, batch_size=1)[0] for q in QUESTIONS]
    batched = smollm.generate(QUESTIONS, max_new_tokens=budget, batch_size=len(QUESTIONS))
    assert [g.token_ids for g in alone] == expected
    assert [g.token_ids for g in batched] == expected
    stops = set(smollm.stop_token_ids)
    for generation in batched:
        assert generation.truncated == (generation.token_ids[-1] not in stops)
        assert generation.truncated == (len(generation.token_ids) == budget and generation.token_ids[-1] not in stops)
    assert {g.truncated for g in batched} == {True, False}  # both kinds of row, as the comment above says


def test_the_converted_checkpoint_is_the_gguf_model_and_answers_as_it(darm, smollm, smollm_dir):
    """The safetensors copy holds the GGUF file's weights, tokenizer and chat template, and ``darm solve`` on it
    answers exactly as the executor read from the GGUF file."""
    converted = AutoregressiveLM.from_pretrained(smollm_dir, dtype=torch.float32)
    assert not is_gguf_model(converted.model)
    expected_weights = smollm.model.state_dict()
    for name, tensor in converted.model.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert converted.tokenizer.chat_template == smollm.tokenizer.chat_template
    assert converted.tokenizer.get_vocab() == smollm.tokenizer.get_vocab()

    question = QUESTIONS[0]
    code, out, err = darm(
        "solve", question, "--pipeline", "arm", "--executor", smollm_dir, "--max-new-tokens", "10", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    prompt = PromptTemplates().direct_prompt(question, "math")  # what --pipeline arm asks
    expected = smollm.generate([prompt], max_new_tokens=10)[0]
    assert result["output"] == expected.text and result["truncated"] == expected.truncated
    assert result["executor_tokens"] == len(expected.token_ids)


def _gsm8k(root: Path) -> Path:
    rows = [
        {"question": "What is 7 + 5?", "answer": "7 + 5 = 12\n#### 12"},
        {"question": "What is 3 times 4?", "answer": "3 * 4 = 12\n#### 12"},
        {"question": "Tom has 10 apples and eats 3. How many are left?", "answer": "10 - 3 = 7\n#### 7"},
    ]
    (root / "gsm8k").mkdir(parents=True)
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_eval_report_and_grade_run_end_to_end(darm, smollm_dir, tmp_path):
    data, out = _gsm8k(tmp_path / "data"), tmp_path / "run"
    common = ["--benchmark", "gsm8k", "--data-dir", data, "--limit", "3", "--max-new-tokens", "12", "--out", out,
              "--no-progress"]  # fmt: skip
    code, stdout, err = darm("eval", "--pipeline", "arm", "--executor", smollm_dir, "--batch-size", "2", *common)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == summary["n"] == 3
    assert all(isinstance(r["truncated"], bool) for r in records)
    assert summary["truncation_rate"] == pytest.approx(sum(r["truncated"] for r in records) / 3)
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["dtype"] == "float32" and config["batch_size"] == 2  # auto on CPU
    prompt = json.loads((out / "prompt.json").read_text())
    assert prompt["sha256"] == config["prompt_sha256"]
    assert prompt["first_item"]["prompts"]["executor"].startswith("<|im_start|>system\n<|im_end|>")

    # In float32 another batch size resumes (answers do not depend on it); a setting that changes answers is
    # refused, naming it.
    code, stdout, err = darm("eval", "--pipeline", "arm", "--executor", smollm_dir, "--batch-size", "3", *common)
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["computed"] == 0, err
    code, _, err = darm("eval", "--pipeline", "arm", "--executor", smollm_dir, "--batch-size", "2", "--dtype",
                        "bfloat16", *common)  # fmt: skip
    assert code == 2 and "dtype" in err
    code, _, err = darm("eval", "--pipeline", "arm", "--executor", smollm_dir, "--batch-size", "2",
                        "--no-system-turn", *common)  # fmt: skip
    assert code == 2 and "system_prompt" in err

    code, _, err = darm("report", out, "--out", tmp_path / "report")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "truncated %" in report and f"{100 * summary['truncation_rate']:.1f} |" in report

    lines = [{"prediction": r["output"], "gold": r["gold"], "truncated": r["truncated"]} for r in records]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, graded, err = darm("grade", predictions)
    assert code == 0, err
    regraded = [json.loads(line) for line in graded.strip().splitlines()]
    assert [g["correct"] for g in regraded] == [r["correct"] for r in records]
