"""Every command works for every planner family: ``darm plan`` on a Dream checkpoint with Dream's algs, one-line
refusals of settings a family does not know, and ``darm train-projector`` with both latent-row alignments."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from latent_darm.api import LatentDARM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.factory import build_pipeline
from latent_darm.projector.model import Projector
from latent_darm.training.latent_cache import LatentCache

PROMPTS = ["What is 3 + 4?", "Write a plan: multiply speed by time."]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_plan_on_dream_equals_the_api(darm, dream_dir):
    code, out, err = darm(
        "plan", "--planner", dream_dir, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
        "--gen-length", "16", "--steps", "8", "--remasking", "topk_margin", "--json", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    planner = DiffusionLM.from_pretrained(dream_dir)
    plans = planner.generate(PROMPTS, planner.sampler_config(gen_length=16, steps=8, remasking="topk_margin"))
    assert [r["token_ids"] for r in records] == [p.token_ids for p in plans]
    assert all(r["nfe"] == 8 for r in records)


@pytest.mark.parametrize(
    ("family", "args", "message"),
    [
        ("dream", ["--remasking", "low_confidence"], "remasking 'low_confidence' is not known to Dream; valid: "
         "maskgit_plus, topk_margin, entropy, origin"),
        ("dream", ["--block-length", "8"], "block_length is not a Dream sampler setting"),
        ("dream", ["--lookahead", "2"], "lookahead is not a Dream sampler setting"),
        ("dream", ["--steps", "20"], "steps 20 exceeds gen_length 16"),
        ("dream", ["--steps", "0"], "steps must be a positive integer, got 0"),
        ("dream", ["--cache", "dual"], "cache 'dual' is not available for Dream; valid: none, prefix"),
        ("llada", ["--remasking", "entropy"], "remasking 'entropy' is not known to LLaDA; valid: low_confidence, "
         "random"),
        ("llada", ["--top-k", "5"], "top_k is not a LLaDA sampler setting"),
    ],
)  # fmt: skip
def test_settings_a_family_does_not_know(darm, dream_dir, llada_dir, family, args, message):
    planner, length = (dream_dir, "16") if family == "dream" else (llada_dir, "32")
    code, out, err = darm(
        "plan", "--planner", planner, "--prompt", "hi", "--gen-length", length, "--steps", length, *args
    )
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_model_type_lists_the_families(darm, dream_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(dream_dir, other)
    raw = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**raw, "model_type": "qwen2"}))
    code, _, err = darm("plan", "--planner", other, "--prompt", "hi")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model_type 'qwen2' is not a supported planner family; supported: llada, Dream, diffusion_gemma" in err


def test_dream_config_without_mask_id_is_refused(darm, dream_dir, tmp_path):
    other = tmp_path / "no_mask"
    shutil.copytree(dream_dir, other)
    raw = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "mask_token_id"}))
    code, _, err = darm("plan", "--planner", other, "--prompt", "hi", "--gen-length", "8", "--steps", "8")
    assert code == 2 and "missing required field 'mask_token_id'" in err and len(err.strip().splitlines()) == 1


def test_train_projector_with_both_latent_alignments(darm, tmp_path, dream_dir, executor_dir):
    """Both alignments train; the choice is stored with the projector and the latent pipeline reuses it; the
    predictor rows are the plan rows moved one to the right (same plans, same last pass)."""
    questions = [f"What is {a} plus {a + 3}?" for a in range(10)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"question": q, "answer": str(2 * a + 3)}) + "\n" for a, q in enumerate(questions))
    )
    (tmp_path / "benchmarks").mkdir()
    latents = {}
    for rows in ("plan", "predictor"):
        out = tmp_path / rows
        code, _, err = darm(
            "train-projector", "--planner", dream_dir, "--executor", executor_dir, "--out", out, "--data", pairs,
            "--data-dir", tmp_path / "benchmarks", "--no-overlap-check", "--gen-length", "8", "--steps", "4",
            "--latent-rows", rows,
            "--hidden-dim", "16", "--batch-size", "4", "--warmup-steps", "1", "--max-steps", "2", "--eval-every", "2",
            "--save-every", "2", "--held-out-per-source", "2", "--max-new-tokens", "4", "--dtype", "float32",
            "--device", "cpu", "--no-progress",
        )  # fmt: skip
        assert code == 0, err
        projector = Projector.from_pretrained(out / "projector")
        assert projector.config.latent_rows == rows and projector.config.training["sampler"]["latent_rows"] == rows
        cache = LatentCache.open(out / "latents")
        keys = sorted(cache.index)
        latents[rows] = cache.load(keys)
        spec = {
            "kind": "latent",
            "planner": {"kind": "ddlm", "model": str(dream_dir), "gen_length": 8, "steps": 4},
            "executor": {"kind": "arm", "model": str(executor_dir), "max_new_tokens": 4},
            "projector": str(out / "projector"),
        }
        pipeline = build_pipeline(spec)
        assert pipeline.sampler.latent_rows == rows and pipeline.sampler.hidden_layer == -1
        assert pipeline.run([questions[0]], "math")[0].accounting.planner_tokens == 8
        api = LatentDARM.from_pretrained(dream_dir, executor_dir, out / "projector", steps=4)
        assert api.pipeline.sampler.latent_rows == rows and api.pipeline.sampler.gen_length == 8
        assert not hasattr(api.pipeline.sampler, "block_length")  # Dream denoises the whole canvas
    torch.testing.assert_close(latents["predictor"][:, 1:], latents["plan"][:, :-1])
    assert not torch.allclose(latents["predictor"], latents["plan"])


def test_solve_with_a_dream_planner(darm, dream_dir, executor_dir):
    code, out, err = darm(
        "solve", "What is 3 + 4?", "--pipeline", "text", "--planner", dream_dir, "--executor", executor_dir,
        "--gen-length", "8", "--steps", "4", "--max-new-tokens", "4", "--json", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["planner_tokens"] == 8 and result["plan"] is not None
    code, _, err = darm(
        "solve", "What is 3 + 4?", "--pipeline", "text", "--planner", dream_dir, "--executor", executor_dir,
        "--gen-length", "8", "--block-length", "4",
    )  # fmt: skip
    assert code == 2 and "block_length is not a Dream sampler setting" in err
