"""``darm demo --quick`` end to end: every model trained (every loss fell), the executor beats chance, every
configuration of the step / denoise sweep graded an answer for every test question with a projector trained for
its own sampler settings, the report and both figures are written, and a rerun reuses everything. No test here
asserts that latent exchange beats text: that is what the demo measures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from latent_darm.grading import grade
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.toy import build as toy_build
from latent_darm.toy.build import build_prefix_executor, build_world
from latent_darm.toy.demo import (
    DEMO_FILE,
    LSTSQ,
    NFE_FIGURE,
    TEXT_LORA,
    demo_configurations,
    demo_settings,
    run_demo,
    train_demo_projectors,
)
from latent_darm.training.latent_cache import LatentCache
from latent_darm.training.projector_trainer import HISTORY_FILE, ProjectorTrainer
from tests.evaluation.test_report import assert_png

SWEEP = ("", ", 4 steps", ", denoised 0.5 of 8 steps")  # the quick demo's planner settings: 8 steps, 4, half of 8
SERIES = (
    "text DDLM→ARM",
    "latent DDLM→ARM",
    "latent DDLM→ARM, inline",
    "text DDLM→ARM + LoRA",
    "latent DDLM→ARM, mixture projector",
    "latent DDLM→ARM + LoRA",
    "latent DDLM→ARM, plan-prefix executor",
)
EXPECTED_LABELS = {
    "ARM direct",
    "ARM CoT",
    "DDLM alone",
    "text ARM→DDLM",
    "text ARM→ARM",
    "text DDLM→DDLM",
    *(f"{stem}{suffix}" for stem in SERIES for suffix in SWEEP),
    "latent DDLM→ARM, lstsq map (no training), inline",  # the full budget's training-free map and controls
    "control: gold plan text → ARM",
    "control: plan-token embeddings, prefix",
    "control: plan-token embeddings, inline",
    "control: latent DDLM→ARM, latents replaced by noise",
} - {  # partly denoised plans: mixture projectors only
    "latent DDLM→ARM, denoised 0.5 of 8 steps",
    "latent DDLM→ARM, inline, denoised 0.5 of 8 steps",
}


@pytest.fixture(scope="module")
def outcome(artifacts, toy_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(demo_settings(quick=True), out, cache_dir=toy_cache, progress=False)


def _mean(values):
    return sum(values) / len(values)


def test_every_configuration_answered_and_graded_every_test_question(outcome):
    test = outcome.world.problems("test")
    assert {run.label for run in outcome.runs} == EXPECTED_LABELS
    for run in outcome.runs:
        records = {r["id"]: r for r in run.records}
        assert set(records) == {p.id for p in test}, run.label
        for problem in test:
            record = records[problem.id]
            assert record["gold"] == str(problem.answer) and record["meta"] == {"level": problem.level}
            assert isinstance(record["correct"], bool)
            assert record["correct"] == grade(record["output"], record["gold"], "integer").correct
    summaries = outcome.summaries
    assert all(s.n == len(test) and s.computed == len(test) for s in summaries.values())


def test_the_accounting_follows_the_pipelines(outcome):
    c = outcome.world.config
    s = outcome.summaries
    assert s["ARM direct"].mean_planner_tokens == 0 and s["DDLM alone"].mean_planner_tokens == 0
    assert s["DDLM alone"].mean_executor_tokens == c.answer_length  # the diffusion canvas, every position counted
    for label in SERIES:
        assert s[label].mean_planner_tokens == c.plan_length
        assert s[label].mean_planner_forward_passes == c.plan_length  # one token per step
        assert s[f"{label}, 4 steps"].mean_planner_forward_passes == 4
        if f"{label}, denoised 0.5 of 8 steps" in s:
            assert s[f"{label}, denoised 0.5 of 8 steps"].mean_planner_forward_passes == 4
    for summary in s.values():
        assert summary.mean_total_tokens == pytest.approx(summary.mean_planner_tokens + summary.mean_executor_tokens)


def test_every_loss_fell(outcome):
    for role, history in outcome.world.histories().items():
        losses = history["losses"]
        assert _mean(losses[-10:]) < 0.7 * _mean(losses[:10]), role
    # text + LoRA: as many optimizer steps as latent + LoRA, and its merged weights moved off the executor's
    lora_history = [json.loads(line) for line in (outcome.projectors["lora"].parent / HISTORY_FILE).open()]
    losses = json.loads((outcome.projectors[TEXT_LORA] / toy_build.HISTORY_FILE).read_text())["losses"]
    assert len(losses) == max(r["step"] for r in lora_history)
    base, adapted = (
        AutoregressiveLM.from_pretrained(d).model for d in (outcome.world.executor_dir, outcome.projectors[TEXT_LORA])
    )
    assert not torch.equal(
        base.model.layers[0].self_attn.q_proj.weight, adapted.model.layers[0].self_attn.q_proj.weight
    )
    for name, directory in outcome.projectors.items():
        if name in (TEXT_LORA, LSTSQ):  # an executor directory; the training-free map
            continue
        history = [json.loads(line) for line in (directory.parent / HISTORY_FILE).read_text().splitlines()]
        held_out = [r["val_loss"] for r in history if "val_loss" in r]
        assert min(held_out[1:]) < held_out[0], name  # the untrained projector is the first point


def test_the_projectors_are_trained_for_their_sampler_settings_and_executor(outcome):
    settings = demo_settings(quick=True)
    assert set(outcome.projectors) == {r.name for r in settings.recipes()} | {TEXT_LORA}
    names = {"matched-s8", "matched-s4", "inline-s8", "inline-s4", "lstsq-inline", "mixture", "lora", "prefix"}
    assert names | {TEXT_LORA} == set(outcome.projectors)
    for recipe in settings.recipes():
        directory = outcome.projectors[recipe.name]
        assert json.loads((directory / "config.json").read_text())["placement"] == recipe.placement
        if recipe.lstsq:  # fitted, not trained: no training run beside it
            assert not (directory.parent / HISTORY_FILE).exists() and recipe.placement == "inline"
            continue
        training = json.loads((directory / "config.json").read_text())["training"]
        samplers = [(s["steps"], s["denoise_fraction"]) for s in training["samplers"]]
        assert samplers == [(s.steps, s.denoise_fraction) for s in recipe.settings]
        assert (directory / "adapter").is_dir() == recipe.lora
    # Each latent row reads the projector of its own settings: matched rows their step budget's, the rest theirs.
    specs = {c.label: c.spec for c in demo_configurations(outcome.world, outcome.projectors, settings)}
    assert specs["latent DDLM→ARM, 4 steps"]["projector"] == str(outcome.projectors["matched-s4"])
    assert specs["latent DDLM→ARM, 4 steps"]["planner"]["steps"] == 4
    assert specs["latent DDLM→ARM + LoRA, 4 steps"]["projector"] == str(outcome.projectors["lora"])
    prefix = specs["latent DDLM→ARM, plan-prefix executor"]
    assert prefix["executor"]["model"] == str(outcome.world.prefix_executor_dir(settings.prefix_steps))
    assert specs["latent DDLM→ARM"]["executor"]["model"] == str(outcome.world.executor_dir)


def test_the_paper_setting_executor_never_saw_the_latent_slots(outcome):
    """The default executor's training mixture has no ``latent`` task; only the plan-prefix executor's has."""
    executor = outcome.world.histories()["executor"]
    assert executor["spec"]["mixture"]["latent"] == 0
    assert executor["spec"]["mixture"]["execute"] > 0  # question + plan text → answer
    prefix_dir = outcome.world.prefix_executor_dir(demo_settings(quick=True).prefix_steps)
    prefix = json.loads((prefix_dir / "training_history.json").read_text())
    assert prefix["spec"]["mixture"]["latent"] == 1.0 and prefix["spec"]["steps"] == 50


def test_the_trained_executor_beats_chance_given_the_gold_plan(outcome):
    """The chance of naming the end node is 1/nodes; the quick executor learns the lookup well above it."""
    world = outcome.world
    executor = AutoregressiveLM.from_pretrained(world.executor_dir)
    test = world.problems("test")
    templates = PromptTemplates()
    prompts = [templates.text_executor_prompt(p.question, p.plan, "integer") for p in test]
    answers = executor.generate(prompts, max_new_tokens=16, batch_size=64)
    accuracy = _mean([grade(a.text, str(p.answer), "integer").correct for a, p in zip(answers, test, strict=True)])
    assert accuracy > 2 / world.config.nodes


def test_report_and_record_are_written(outcome):
    out = outcome.out_dir
    report = (out / "report.md").read_text()
    assert all(label in report for label in EXPECTED_LABELS)
    assert "### By level" in report
    assert_png(out / "toy_accuracy_vs_tokens.png")
    assert_png(out / NFE_FIGURE)
    assert (out / "toy_levels.csv").read_text().count("\n") == 1 + len(EXPECTED_LABELS) * 3
    record = json.loads((out / DEMO_FILE).read_text())
    assert record["world"]["directory"] == str(outcome.world.directory)
    assert record["fingerprint"] == outcome.fingerprint == demo_settings(quick=True).fingerprint()
    assert set(record["summaries"]) == EXPECTED_LABELS
    for run in outcome.runs:
        assert (run.directory / "results.jsonl").exists()


def test_a_rerun_reuses_the_world_the_projector_and_the_results(outcome, toy_cache):
    again = run_demo(demo_settings(quick=True), outcome.out_dir, cache_dir=toy_cache, progress=False)
    assert again.world.reused and again.projectors == outcome.projectors
    assert all(s.computed == 0 for s in again.summaries.values())
    assert {k: v.accuracy for k, v in again.summaries.items()} == {k: v.accuracy for k, v in outcome.summaries.items()}


def test_the_configurations_cover_every_pairing(artifacts, tmp_path):
    settings = demo_settings(quick=True)
    projectors = {recipe.name: tmp_path / recipe.name for recipe in settings.recipes()}
    configurations = demo_configurations(artifacts, projectors, settings)
    pairings = {
        (c.spec["kind"], (c.spec["planner"] or {}).get("kind"), c.spec["executor"]["kind"]) for c in configurations
    }
    assert pairings == {
        ("arm", None, "arm"),
        ("ddlm", None, "ddlm"),
        ("text", "ddlm", "arm"),
        ("text", "arm", "ddlm"),
        ("text", "arm", "arm"),
        ("text", "ddlm", "ddlm"),
        ("latent", "ddlm", "arm"),
    }
    assert len({c.slug for c in configurations}) == len(configurations)


def test_cli_demo_prints_the_table_and_names_the_output(darm, outcome, toy_cache, tmp_path):
    out = tmp_path / "cli-demo"
    code, stdout, stderr = darm("demo", "--quick", "--out", str(out), "--cache-dir", str(toy_cache), "--no-progress")
    assert code == 0, stderr
    assert all(label in stdout for label in EXPECTED_LABELS)
    assert f"demo fingerprint: {outcome.fingerprint}" in stdout
    assert str(out) in stderr
    assert (out / "report.md").exists()


def test_a_world_cache_copied_elsewhere_is_reused_without_recomputing(outcome, toy_cache, tmp_path, monkeypatch):
    """Latents and projector runs are keyed by the models' weights, not by where the cache lives: a copy of a
    finished cache computes no latent and trains no step."""
    copied = Path(shutil.copytree(toy_cache, tmp_path / "moved"))

    def refuse(*args, **kwargs):
        raise AssertionError("the copied cache was recomputed")

    monkeypatch.setattr(LatentCache, "add", refuse)
    monkeypatch.setattr(ProjectorTrainer, "step", refuse)
    monkeypatch.setattr(toy_build, "_train_executor", refuse)
    settings = demo_settings(quick=True)
    world = build_world(settings.world, copied, progress=False)
    assert world.reused and world.directory.parent == copied
    build_prefix_executor(world, settings.prefix_steps, progress=False)
    projectors = train_demo_projectors(world, settings, progress=False)
    assert projectors.keys() == outcome.projectors.keys()
    for name, directory in projectors.items():
        assert world.directory in directory.parents
        assert (directory / "model.safetensors").read_bytes() == (
            outcome.projectors[name] / "model.safetensors"
        ).read_bytes()


def test_the_demo_pairs_latent_with_text_at_the_same_setting_only(outcome):
    """Every paired test compares runs at the same planner setting (no text DDLM→DDLM, no full against denoised),
    latent + LoRA also meets text + LoRA, and the noise control meets the latent row it is made from."""
    import csv

    with (outcome.out_dir / "toy_paired.csv").open() as handle:
        pairs = [(row["a"], row["b"]) for row in csv.DictReader(handle)]
    suffixes = sorted(SWEEP, key=len, reverse=True)

    def setting(label: str) -> str:
        return next((s for s in suffixes if s and label.endswith(s)), "")

    assert all(setting(a) == setting(b) and "DDLM→DDLM" not in b for a, b in pairs)
    assert ("latent DDLM→ARM + LoRA, 4 steps", "text DDLM→ARM + LoRA, 4 steps") in pairs
    assert ("latent DDLM→ARM, inline", "text DDLM→ARM") in pairs
    assert ("control: plan-token embeddings, inline", "text DDLM→ARM") in pairs
    assert ("control: latent DDLM→ARM, latents replaced by noise", "latent DDLM→ARM") in pairs
    assert len(pairs) == len(set(pairs))


def test_the_controls_are_what_they_say(outcome):
    """Gold-plan text reads the world's gold plans with no planner pass; the plan-token-embedding rows feed the
    executor its own embeddings of the plan's tokens; the noise row adds noise 100× the latents."""
    from latent_darm.evaluation.report import load_run
    from latent_darm.pipelines.factory import ModelCache, build_pipeline
    from latent_darm.toy.controls import plan_embedding_pipeline

    runs = {run.label: run for run in outcome.runs}
    gold = {p.question: p.plan for p in outcome.world.problems("test")}
    records = runs["control: gold plan text → ARM"].records
    assert all(r["plan"] == gold[r["question"]] for r in records)
    assert all(r["planner_forward_passes"] == 0 for r in records)
    noise = load_run(runs["control: latent DDLM→ARM, latents replaced by noise"].directory)
    assert noise.config["spec"]["latent_noise"] == 100.0
    spec = {k: v for k, v in runs["control: plan-token embeddings, inline"].config["spec"].items() if k != "control"}
    pipeline = plan_embedding_pipeline(build_pipeline(spec, ModelCache(torch.float32, "cpu")), "inline")
    assert pipeline.projector.config.placement == "inline"
    question = records[0]["question"]
    (plan,) = pipeline.plan([question], 1)
    table = pipeline.executor.input_embeddings.weight
    tokens = pipeline.plan_token_ids(plan)  # the plan text's tokens: no end of turn, no EOS padding
    assert not set(tokens) & {pipeline.planner.ids.eos, pipeline.planner.ids.eot}
    assert torch.equal(pipeline.projector.project(plan.latents[None])[0], table[torch.tensor(tokens)])


def test_the_projector_curves_are_read_plotted_and_recorded(outcome):
    trained = set(outcome.projectors) - {LSTSQ, TEXT_LORA}  # the map and the text-LoRA executor have no curve
    assert {c.name for c in outcome.curves} == trained
    assert_png(outcome.out_dir / "projector_curves.png")
    record = json.loads((outcome.out_dir / DEMO_FILE).read_text())["projector_curves"]
    assert set(record) == trained and all(isinstance(c["on_plateau"], bool) for c in record.values())


def test_two_workers_train_the_same_projectors_as_one(outcome, toy_cache, tmp_path):
    """``darm demo --workers 2`` trains two models at once in spawned processes; every projector and the text-LoRA
    executor come out byte-identical to the ones trained one after another in this process."""
    world_dir = outcome.world.directory
    copied = tmp_path / "cache" / world_dir.name
    shutil.copytree(world_dir, copied, ignore=shutil.ignore_patterns("projector-*", "executor-text-lora-*", "latents"))
    settings = demo_settings(quick=True)
    world = build_world(settings.world, copied.parent, progress=False)
    assert world.reused and world.directory == copied
    projectors = train_demo_projectors(world, settings, progress=False, workers=2)
    assert projectors.keys() == outcome.projectors.keys()
    for name, directory in projectors.items():
        assert copied in directory.parents
        trained = (directory / "model.safetensors").read_bytes()
        assert trained == (outcome.projectors[name] / "model.safetensors").read_bytes(), name


def test_two_workers_evaluate_the_same_answers_as_one(outcome, toy_cache, tmp_path):
    """``--workers 2`` also evaluates two configurations at once (spawned processes, the control rows included): every
    configuration's answers equal the one-process run's, question by question."""
    again = run_demo(demo_settings(quick=True), tmp_path / "two", cache_dir=toy_cache, progress=False, workers=2)
    assert [r.label for r in again.runs] == [r.label for r in outcome.runs]
    for one, two in zip(outcome.runs, again.runs, strict=True):
        strip = [{k: v for k, v in record.items() if k != "seconds"} for record in one.records]
        assert strip == [{k: v for k, v in record.items() if k != "seconds"} for record in two.records], one.label
    assert {k: v.accuracy for k, v in again.summaries.items()} == {k: v.accuracy for k, v in outcome.summaries.items()}
