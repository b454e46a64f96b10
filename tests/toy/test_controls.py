"""The plan-token-embedding control reads the plan's tokens only: never the canvas's end-of-turn / EOS padding, one
row per plan of its own length, a row's answer the same in a batch as alone, and inline exactly text DDLM→ARM."""

from __future__ import annotations

import pytest
import torch

from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM, Plan
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.projector.model import Projector
from latent_darm.toy.controls import PlanEmbeddingPipeline, plan_embedding_pipeline

PLAN = 8
# Plans of different lengths, as a planner's canvas would hold them before its end of turn.
PLANS = {
    "What is 3x + 7 = 22?": "the answer",
    "A train travels 60 miles per hour for 3 hours. How far does it go?": "one",
    "Natalia sold clips to 48 of her friends in April. How many in May?": "x",
}


def _ddlm(model, length: int = PLAN) -> dict:
    return {
        "kind": "ddlm",
        "model": str(model),
        "gen_length": length,
        "steps": length,
        "block_length": length,
        "threshold": None,
        "cache": "none",
    }


def _arm(model, budget: int = 6) -> dict:
    return {"kind": "arm", "model": str(model), "max_new_tokens": budget, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def tiny_projector(tmp_path_factory, llada_dir, executor_dir):
    torch.manual_seed(0)
    planner, executor = DiffusionLM.from_pretrained(llada_dir), AutoregressiveLM.from_pretrained(executor_dir)
    projector = Projector.for_pair(planner, executor, plan_length=PLAN, hidden_dim=32)
    return projector.save_pretrained(tmp_path_factory.mktemp("projector") / "projector")


def _canvas(planner: DiffusionLM, text: str) -> list[int]:
    """A plan's tokens, its end of turn, then EOS padding to the canvas length: what the planner decodes."""
    ids = list(planner.tokenizer(text, add_special_tokens=False)["input_ids"])[: PLAN - 2]
    return [*ids, planner.ids.eot, *[planner.ids.eos] * (PLAN - len(ids) - 1)]


def _control(llada_dir, executor_dir, projector, placement: str, monkeypatch) -> PlanEmbeddingPipeline:
    """The control over tiny models, its planner answering each question with its canvas from PLANS."""
    spec = {"kind": "latent", "planner": _ddlm(llada_dir), "executor": _arm(executor_dir), "projector": str(projector)}
    control = plan_embedding_pipeline(build_pipeline(spec, ModelCache(torch.float32, "cpu")), placement)
    planner = control.planner

    def generate(prompts, config, *, batch_size):
        plans = []
        for prompt in prompts:
            (canvas,) = [_canvas(planner, text) for q, text in PLANS.items() if q in prompt]
            plans.append(Plan([], canvas, planner.decode_plan(canvas), PLAN, 0.0, torch.zeros(PLAN, 4)))
        return plans

    monkeypatch.setattr(planner, "generate", generate)
    return control


@pytest.mark.parametrize("placement", ["prefix", "inline"])
def test_the_control_embeds_the_plan_text_tokens_and_no_end_of_turn_or_padding(
    llada_dir, executor_dir, tiny_projector, placement, monkeypatch
):
    control = _control(llada_dir, executor_dir, tiny_projector, placement, monkeypatch)
    executor, ids = control.executor, control.planner.ids
    table = executor.input_embeddings.weight
    plans = control.plan(list(PLANS), 2)
    specials = {ids.eos, ids.eot, control.planner.pad_token_id, *executor.stop_token_ids}
    for plan in plans:
        assert specials & set(plan.token_ids)  # the canvas has them
        tokens = list(executor.tokenizer(plan.text, add_special_tokens=False)["input_ids"])
        assert 0 < len(tokens) < PLAN and not specials & set(tokens)
        assert torch.equal(plan.latents, table[torch.tensor(tokens)])
        assert not any(torch.equal(row, table[s]) for row in plan.latents for s in specials)
    assert len({p.latents.shape[0] for p in plans}) == len(PLANS)  # one length per plan
    soft = control.soft_tokens(plans)
    assert all(torch.equal(s, p.latents) for s, p in zip(soft, plans, strict=True))  # an identity projector


@pytest.mark.parametrize("placement", ["prefix", "inline"])
def test_a_row_of_the_control_answers_the_same_in_a_batch_as_alone(
    llada_dir, executor_dir, tiny_projector, placement, monkeypatch
):
    """Rows of different soft-token counts are left-padded with a mask and positions from it: no row moves."""
    control = _control(llada_dir, executor_dir, tiny_projector, placement, monkeypatch)
    control.max_new_tokens = 12
    batched = control.run(list(PLANS), "math", batch_size=3)
    alone = [control.run([q], "math", batch_size=1)[0] for q in PLANS]
    assert [r.output for r in batched] == [r.output for r in alone]
    assert len({r.output for r in alone}) > 1  # the answers differ, so the comparison can fail
    assert sorted(r.latent_summary["length"] for r in batched) == sorted(
        len(control.plan_token_ids(p)) for p in control.plan(list(PLANS), 3)
    )


def test_on_the_toy_world_the_inline_control_reads_what_text_ddlm_arm_reads(artifacts, tmp_path):
    """Inline, the control's input embeddings are the text pipeline's prompt embeddings, so its answers are text
    DDLM→ARM's: the control is the text channel's plan delivered as embeddings, not a different prompt."""
    planner, executor = DiffusionLM.from_pretrained(artifacts.planner_dir), artifacts.executor_dir
    arm = AutoregressiveLM.from_pretrained(executor)
    projector = Projector.for_pair(planner, arm, plan_length=PLAN, hidden_dim=16).save_pretrained(tmp_path / "p")
    models = ModelCache(torch.float32, "cpu")
    latent = {"kind": "latent", "planner": _ddlm(artifacts.planner_dir), "executor": _arm(executor, 16)}
    control = plan_embedding_pipeline(build_pipeline(latent | {"projector": str(projector)}, models), "inline")
    text = build_pipeline(
        {"kind": "text", "planner": _ddlm(artifacts.planner_dir), "executor": _arm(executor, 16)}, models
    )
    questions = [p.question for p in artifacts.problems("test")[::7]][:12]
    templates = control.templates
    plans = control.plan(questions, 4)
    stops = {control.planner.ids.eos, control.planner.ids.eot}
    assert any(stops & set(p.token_ids) and control.plan_token_ids(p) for p in plans)  # a plan, then padding
    for plan, question in zip(plans, questions, strict=True):
        prompt = templates.soft_token_prompt(question, "integer", "inline")
        before, after = control.executor.plan_segments(prompt, "inline", templates.system_prompt)
        full = control.executor.prompt_ids(
            templates.text_executor_prompt(question, plan.text, "integer"), system=templates.system_prompt
        )
        assert full == before + control.plan_token_ids(plan) + after
    ours, theirs = control.run(questions, "integer", batch_size=4), text.run(questions, "integer", batch_size=4)
    assert [r.plan for r in ours] == [r.plan for r in theirs]
    assert [r.output for r in ours] == [r.output for r in theirs]
