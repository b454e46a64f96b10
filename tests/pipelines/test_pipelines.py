"""Every pipeline through the spec factory: batched == unbatched at temperature 0, accounting adds up, the
latent pipeline is exactly planner latents → projector → soft-token executor."""

from __future__ import annotations

import json

import pytest
import torch

from latent_darm.api import LatentDARM
from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.pipelines.text import TextPipeline
from latent_darm.pipelines.writers import Written
from latent_darm.projector.model import Projector

QUESTIONS = [
    "What is 3x + 7 = 22?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "Natalia sold clips to 48 of her friends in April. How many in May?",
]
PLAN = 16


@pytest.fixture(scope="module")
def projector_dir(tmp_path_factory, llada_dir, executor_dir):
    planner = DiffusionLM.from_pretrained(llada_dir)
    executor = AutoregressiveLM.from_pretrained(executor_dir)
    torch.manual_seed(0)
    projector = Projector.for_pair(planner, executor, plan_length=PLAN, hidden_dim=32)
    return projector.save_pretrained(tmp_path_factory.mktemp("projector") / "projector")


def ddlm(model, length=PLAN, block=8):
    return {
        "kind": "ddlm",
        "model": str(model),
        "gen_length": length,
        "steps": length,
        "block_length": block,
        "threshold": None,
        "cache": "none",
    }


def arm(model, budget=6):
    return {"kind": "arm", "model": str(model), "max_new_tokens": budget, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def specs(llada_dir, executor_dir, projector_dir):
    return {
        "arm": {"kind": "arm", "executor": arm(executor_dir)},
        "arm-cot": {"kind": "arm", "executor": arm(executor_dir, 10), "chain_of_thought": True},
        "ddlm": {"kind": "ddlm", "executor": ddlm(llada_dir)},
        "text-ddlm-arm": {"kind": "text", "planner": ddlm(llada_dir), "executor": arm(executor_dir)},
        "text-arm-ddlm": {"kind": "text", "planner": arm(executor_dir, 8), "executor": ddlm(llada_dir, 8)},
        "text-arm-arm": {"kind": "text", "planner": arm(executor_dir, 8), "executor": arm(executor_dir)},
        "text-ddlm-ddlm": {"kind": "text", "planner": ddlm(llada_dir), "executor": ddlm(llada_dir, 8)},
        "latent": {
            "kind": "latent",
            "planner": ddlm(llada_dir),
            "executor": arm(executor_dir),
            "projector": str(projector_dir),
        },
    }


@pytest.fixture(scope="module")
def models():
    return ModelCache(torch.float32, "cpu")


@pytest.mark.parametrize(
    "name", ["arm", "arm-cot", "ddlm", "text-ddlm-arm", "text-arm-ddlm", "text-arm-arm", "text-ddlm-ddlm", "latent"]
)
def test_batched_equals_unbatched_and_accounting_adds_up(specs, models, name):
    pipeline = build_pipeline(specs[name], models)
    assert pipeline.name == name
    batched = pipeline.run(QUESTIONS, "math", batch_size=3)
    one_by_one = [pipeline.run([q], "math", batch_size=1)[0] for q in QUESTIONS]
    assert [r.output for r in batched] == [r.output for r in one_by_one]
    assert [r.plan for r in batched] == [r.plan for r in one_by_one]
    spec = specs[name]
    for result in batched:
        a = result.accounting
        assert a.total_tokens == a.planner_tokens + a.executor_tokens
        assert result.to_dict()["total_tokens"] == a.total_tokens
        assert a.seconds > 0
        executor = spec["executor"]
        if executor["kind"] == "arm":
            assert 1 <= a.executor_tokens <= executor["max_new_tokens"]
            assert a.executor_forward_passes == a.executor_tokens  # one cached pass per generated token
        else:
            assert a.executor_tokens == executor["gen_length"] and a.executor_forward_passes == executor["steps"]
        planner = spec.get("planner")
        if planner is None:
            assert result.plan is None and a.planner_tokens == a.planner_forward_passes == 0
        elif planner["kind"] == "ddlm":
            assert a.planner_tokens == planner["gen_length"] and a.planner_forward_passes == planner["steps"]
        else:
            assert 1 <= a.planner_tokens <= planner["max_new_tokens"]


def test_models_named_twice_are_loaded_once(specs):
    models = ModelCache(torch.float32, "cpu")
    pipeline = build_pipeline(specs["text-arm-arm"], models)
    assert isinstance(pipeline, TextPipeline) and pipeline.planner.model is pipeline.executor.model
    assert len(models.loaded) == 1


class RecordingWriter:
    kind = "fake"

    def __init__(self, text: str) -> None:
        self.text, self.prompts = text, []

    def write(self, prompts, batch_size):
        self.prompts.extend(prompts)
        return [Written(self.text, 3, 2, 0.5) for _ in prompts]

    def describe(self):
        return {"kind": self.kind}


def test_text_executor_reads_plan_then_question_then_format_and_planner_never_sees_the_format():
    planner, executor = RecordingWriter("step one; step two"), RecordingWriter("\\boxed{5}")
    result = TextPipeline(planner, executor).run(["How many?"], "math")[0]
    templates = PromptTemplates()
    assert planner.prompts == [templates.planner_prompt("How many?")]
    assert templates.answer_format("math") not in planner.prompts[0]
    prompt = executor.prompts[0]
    assert (
        prompt.index("step one; step two") < prompt.index("How many?") < prompt.index(templates.answer_format("math"))
    )
    assert (result.plan, result.output, result.accounting.total_tokens, result.accounting.seconds) == (
        "step one; step two",
        "\\boxed{5}",
        6,
        1.0,
    )


def test_latent_pipeline_is_planner_latents_through_projector_into_the_executor(specs, models):
    pipeline = build_pipeline(specs["latent"], models)
    results = pipeline.run(QUESTIONS, "math", batch_size=2)
    templates = PromptTemplates()
    planner, executor, projector = pipeline.planner, pipeline.executor, pipeline.projector
    sampler = LLaDASamplerConfig(gen_length=PLAN, block_length=8, steps=PLAN, hidden_layer=-1)
    plans = planner.generate([templates.planner_prompt(q) for q in QUESTIONS], sampler, batch_size=1)
    soft = projector(torch.stack([p.latents for p in plans]))
    expected = executor.generate_from_embeddings(
        soft, [templates.latent_executor_prompt(q, "math") for q in QUESTIONS], max_new_tokens=6, batch_size=1
    )
    assert [r.output for r in results] == [g.text for g in expected]
    assert [r.plan for r in results] == [p.text for p in plans]
    assert results[0].latent_summary["length"] == PLAN and results[0].latent_summary["dim"] == planner.hidden_size
    noisy = build_pipeline({**specs["latent"], "latent_noise": 5.0}, models).run(QUESTIONS, "math")
    assert [r.plan for r in noisy] == [r.plan for r in results]  # noise touches the latents, not the plan


def test_latent_noise_is_what_the_projector_and_executor_receive(specs, models, monkeypatch):
    """latent_noise σ: the projector reads latents + σ · RMS(latents of the example) · N(0, 1) drawn from the
    pipeline's seeded generator, and the executor reads the projection of exactly that (σ = 0: the clean latents)."""
    sigma = 0.5
    seen: dict[str, list[torch.Tensor]] = {"projector": [], "executor": []}
    for noise in (0.0, sigma):
        pipeline = build_pipeline({**specs["latent"], "latent_noise": noise}, models)
        project, generate = pipeline.projector.project, pipeline.executor.generate_from_embeddings

        def recording_project(latents, *args, project=project, **kwargs):
            seen["projector"].append(latents.clone())
            return project(latents, *args, **kwargs)

        def recording_generate(soft, *args, generate=generate, **kwargs):
            seen["executor"].append(torch.stack(list(soft)).clone())
            return generate(soft, *args, **kwargs)

        monkeypatch.setattr(pipeline.projector, "project", recording_project)
        monkeypatch.setattr(pipeline.executor, "generate_from_embeddings", recording_generate)
        pipeline.run(QUESTIONS, "math", batch_size=3)
        monkeypatch.undo()
    templates = PromptTemplates()
    plans = pipeline.planner.generate([templates.planner_prompt(q) for q in QUESTIONS], pipeline.sampler, batch_size=3)
    clean = torch.stack([p.latents for p in plans])
    rms = clean.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()  # one scale per example
    draw = torch.randn(clean.shape, generator=torch.Generator().manual_seed(pipeline.seed))
    assert torch.equal(seen["projector"][0], clean)
    torch.testing.assert_close(seen["projector"][1], clean + sigma * rms * draw)
    assert (seen["projector"][1] - clean).abs().mean() > 0.1 * sigma * rms.mean()
    projected = pipeline.projector.project(seen["projector"][1], device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(seen["executor"][1], projected)
    assert not torch.allclose(seen["executor"][1], seen["executor"][0])


def test_latent_pipeline_bad_input(specs, models):
    with pytest.raises(ConfigError, match="trained on plans of 16 positions; gen_length is 32"):
        build_pipeline({**specs["latent"], "planner": ddlm(specs["ddlm"]["executor"]["model"], 32)}, models)
    with pytest.raises(ConfigError, match="question 1 is empty"):
        build_pipeline(specs["latent"], models).run(["ok?", "  "], "math")
    with pytest.raises(ConfigError, match="pairs a ddlm planner with an arm executor"):
        build_pipeline({**specs["latent"], "executor": ddlm(specs["ddlm"]["executor"]["model"])}, models)


def test_python_api_matches_the_pipeline(llada_dir, executor_dir, projector_dir, specs, models):
    darm = LatentDARM.from_pretrained(llada_dir, executor_dir, projector_dir, block_length=8, max_new_tokens=6)
    one = darm(QUESTIONS[0])
    assert one.output == build_pipeline(specs["latent"], models).run(QUESTIONS[:1], "math")[0].output
    assert len(darm(QUESTIONS)) == 3
    import latent_darm

    assert latent_darm.LatentDARM is LatentDARM  # the documented top-level import


def test_darm_solve(darm, llada_dir, executor_dir, projector_dir):
    common = ["--planner", llada_dir, "--executor", executor_dir, "--block-length", "8", "--max-new-tokens", "6"]
    code, out, _ = darm("solve", QUESTIONS[0], "--projector", projector_dir, *common)
    assert code == 0 and "── answer" in out and "── tokens: planner 16 + executor" in out
    code, out, _ = darm("solve", QUESTIONS[0], "--pipeline", "text", "--gen-length", "16", "--json", *common)
    record = json.loads(out)
    assert code == 0 and record["pipeline"] == "text-ddlm-arm" and record["planner_tokens"] == 16
    code, _, err = darm("solve", "  ", "--projector", projector_dir, *common)
    assert code != 0 and "the question is empty" in err
