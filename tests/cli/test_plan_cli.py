"""``darm plan``: JSON lines in input order, batching that does not change answers, one-line errors."""

from __future__ import annotations

import json

import pytest

from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig

SETTINGS = ["--gen-length", "16", "--steps", "16", "--block-length", "8"]
PROMPTS = ["What is 3x + 7 = 22?", "A train travels 60 miles per hour for 3 hours. How far?", "Natalia sold clips."]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_output_matches_the_api_in_input_order(darm, llada_dir, prompts_file):
    code, out, _ = darm(
        "plan", "--planner", llada_dir, "--prompts-file", prompts_file, "--json", *SETTINGS, "--batch-size", "2"
    )
    assert code == 0
    records = _json_lines(out)
    assert [set(r) for r in records] == [{"prompt_ids", "token_ids", "text", "nfe", "seconds"}] * 3
    planner = DiffusionLM.from_pretrained(llada_dir)
    expected = planner.generate(PROMPTS, LLaDASamplerConfig(gen_length=16, block_length=8, steps=16), batch_size=1)
    for record, plan in zip(records, expected, strict=True):
        assert record["prompt_ids"] == plan.prompt_ids
        assert record["token_ids"] == plan.token_ids and len(record["token_ids"]) == 16
        assert record["text"] == plan.text and record["nfe"] == 16


def test_chat_and_raw_prompts(darm, llada_dir):
    planner = DiffusionLM.from_pretrained(llada_dir)
    _, out, _ = darm("plan", "--planner", llada_dir, "--prompt", PROMPTS[0], "--json", *SETTINGS)
    assert _json_lines(out)[0]["prompt_ids"][0] == planner.tokenizer.bos_token_id
    _, out, _ = darm("plan", "--planner", llada_dir, "--prompt", PROMPTS[0], "--json", "--no-chat", *SETTINGS)
    assert _json_lines(out)[0]["prompt_ids"] == planner.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]


def test_fast_mode_reports_fewer_passes(darm, llada_dir):
    _, out, _ = darm(
        "plan",
        "--planner",
        llada_dir,
        "--prompt",
        PROMPTS[1],
        "--json",
        "--gen-length",
        "32",
        "--steps",
        "32",
        "--block-length",
        "8",
        "--threshold",
        "0.05",
        "--cache",
        "dual",
    )
    assert _json_lines(out)[0]["nfe"] < 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--planner", "/nonexistent/planner", "--prompt", "hi"], "planner directory not found: /nonexistent/planner"),
        (["--prompt", "hi", "--gen-length", "10", "--block-length", "4"], "gen_length 10 is not divisible by"),
        (["--prompt", "hi", "--gen-length", "16", "--block-length", "4", "--steps", "6"], "steps 6 is not divisible"),
        (["--prompt", "hi " * 600], "exceeds the model's max_sequence_length"),
        (["--prompt", "   "], "--prompt must not be empty"),
        (["--prompt", "hi", "--cache", "full"], "cache must be"),
        (["--prompt", "hi", "--mask-token-id", "5"], "pad token id 5 equals the mask token id"),
        ([], "give exactly one of --prompt or --prompts-file"),
    ],
)
def test_bad_input_is_one_line_with_nonzero_exit(darm, llada_dir, args, message):
    if "--planner" not in args:
        args = ["--planner", str(llada_dir), *args]
    code, out, err = darm("plan", *args)
    assert code != 0 and out == ""
    assert message in " ".join(err.split())
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{"prompt": \n', "prompts.jsonl:2: malformed JSON"),
        ('{"prompt": "ok"}\n{"question": "x"}\n', "prompts.jsonl:2: missing or empty 'prompt' string"),
        ("", "prompts.jsonl: no prompts in file"),
    ],
)
def test_bad_prompts_file_names_the_line(darm, llada_dir, tmp_path, content, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    code, _, err = darm("plan", "--planner", llada_dir, "--prompts-file", path)
    assert code != 0 and message in " ".join(err.split())


def test_debug_shows_the_traceback(darm, llada_dir):
    code, _, err = darm("plan", "--planner", llada_dir, "--prompt", "hi", "--gen-length", "10", "--debug")
    assert code != 0 and "Traceback" in err
