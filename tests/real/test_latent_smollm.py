"""The latent pipeline with a real executor: a tiny random LLaDA plans, SmolLM2-135M-Instruct reads the projected
latents. ``darm train-projector`` trains a projector for a few steps (the held-out loss must fall, and the paper's
300 warm-up steps are scaled down to the short run), then ``darm solve`` answers through it."""

from __future__ import annotations

import json
import random

from accelerate.state import AcceleratorState, GradientState


def test_projector_trains_and_the_latent_pipeline_answers(darm, llada_dir, smollm_dir, tmp_path):
    rng = random.Random(0)
    pairs = [(rng.randint(2, 40), rng.randint(2, 40)) for _ in range(24)]
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n" for a, b in pairs)
    )
    out = tmp_path / "projector-run"
    try:
        code, stdout, err = darm(
            "train-projector", "--planner", llada_dir, "--executor", smollm_dir, "--out", out, "--data", data,
            "--held-out-per-source", "4", "--gen-length", "8", "--block-length", "8", "--hidden-dim", "64",
            "--lr", "3e-3", "--batch-size", "2", "--max-steps", "4", "--eval-every", "4", "--save-every", "100",
            "--max-new-tokens", "2", "--device", "cpu", "--no-progress", "--no-overlap-check",
        )  # fmt: skip
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert code == 0, err
    assert "warm-up: 300 steps would not finish in this run of 4 steps; using 1" in err.replace("\n", " ")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    validated = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in validated] == [0, 4]  # before and after training
    assert validated[-1]["val_loss"] < validated[0]["val_loss"]

    code, stdout, err = darm(
        "solve", "What is 2 + 3?", "--pipeline", "latent", "--planner", llada_dir, "--executor", smollm_dir,
        "--projector", out / "projector", "--block-length", "8", "--max-new-tokens", "12", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["planner_tokens"] == 8 and 1 <= result["executor_tokens"] <= 12
    assert result["truncated"] == (result["executor_tokens"] == 12 and "<|im_end|>" not in result["output"])
