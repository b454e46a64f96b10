"""``darm diagnose --attention`` on the tiny models: the executor's inputs are rebuilt with the plan slots, question
and answer where the pipelines put them, the shares are attention weights summed per group (checked against the
model's own attention tensor), and the table and figure are written; the command runs end to end on a text run."""

from __future__ import annotations

import csv

import pytest
import torch

from latent_darm.evaluation.attention import (
    GROUPS,
    ItemInput,
    attention_profile,
    attention_shares,
    build_inputs,
    write_attention,
)
from latent_darm.evaluation.report import Run
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.factory import build_pipeline
from latent_darm.projector.model import Projector

QUESTIONS = ["What is 3 plus 4?", "What is 10 plus 2?", "What is 7 plus 7?"]
PLAN = 8


def _spec(kind: str, llada_dir, executor_dir, projector=None) -> dict:
    planner = {"kind": "ddlm", "model": str(llada_dir), "gen_length": PLAN, "steps": PLAN, "block_length": PLAN}
    spec = {"kind": kind, "planner": planner, "executor": {"kind": "arm", "model": str(executor_dir),
                                                           "max_new_tokens": 4}}  # fmt: skip
    return spec | ({"projector": str(projector)} if projector else {})


def _run(pipeline, spec: dict, tmp_path) -> Run:
    results = pipeline.run(QUESTIONS, "math")
    records = [{"id": f"q{i}", **r.to_dict(), "answer_type": "math", "correct": i != 1} for i, r in enumerate(results)]
    return Run(tmp_path, {"spec": spec}, records, spec["kind"])


@pytest.fixture(scope="module")
def projector_dir(tmp_path_factory, llada_dir, executor_dir):
    planner, executor = DiffusionLM.from_pretrained(llada_dir), AutoregressiveLM.from_pretrained(executor_dir)
    directory = tmp_path_factory.mktemp("projector") / "p"
    torch.manual_seed(0)
    Projector.for_pair(planner, executor, plan_length=PLAN, hidden_dim=16, placement="inline").save_pretrained(
        directory
    )
    return directory


def test_latent_inputs_put_the_soft_tokens_at_their_slots(tmp_path, llada_dir, executor_dir, projector_dir):
    spec = _spec("latent", llada_dir, executor_dir, projector_dir)
    pipeline = build_pipeline(spec)
    run = _run(pipeline, spec, tmp_path)
    items = build_inputs(pipeline, run.records)
    executor = pipeline.executor
    for item, record in zip(items, run.records, strict=True):
        assert item.groups.count("plan") == PLAN
        first = item.groups.index("plan")
        assert item.groups[first : first + PLAN] == ["plan"] * PLAN and first > 0  # inline: after "Plan:"
        prompt = pipeline.templates.soft_token_prompt(record["question"], "math", "inline")
        before, after = executor.plan_segments(prompt, "inline")
        assert first == len(before) and len(item.groups) == len(before) + PLAN + len(after)
        question_ids = [t for t, g in zip(after, item.groups[first + PLAN :], strict=True) if g == "question"]
        assert record["question"] in executor.tokenizer.decode(question_ids)
        assert item.embeds.shape[0] == len(item.groups) + item.answer_length
    rows = attention_profile(run, pipeline, limit=3)
    layers = executor.model.config.num_hidden_layers
    assert [(r.outcome, r.n) for r in rows] == [("correct", 2)] * layers + [("wrong", 1)] * layers
    for row in rows:
        assert sum(row.shares) == pytest.approx(1.0, abs=1e-5) and min(row.shares) >= 0


def test_text_inputs_and_shares_match_the_attention_tensor(tmp_path, llada_dir, executor_dir):
    spec = _spec("text", llada_dir, executor_dir)
    pipeline = build_pipeline(spec)
    run = _run(pipeline, spec, tmp_path)
    executor = pipeline.executor.model
    items = build_inputs(pipeline, run.records)
    for item, record in zip(items, run.records, strict=True):
        ids = executor.chat_ids(pipeline.templates.text_executor_prompt(record["question"], record["plan"], "math"))
        plan_ids = [t for t, g in zip(ids, item.groups, strict=True) if g == "plan"]
        assert record["plan"] and record["plan"].strip() in executor.tokenizer.decode(plan_ids)
        assert len(executor.tokenizer.decode(plan_ids)) <= len(record["plan"]) + 12  # the plan's tokens, no more
        assert "question" in item.groups
    # Hand computation on one item: mean over heads, then over the answer-producing positions, summed per group.
    item = items[0]
    executor.model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = executor.model(inputs_embeds=item.embeds[None], output_attentions=True).attentions
    groups = [*item.groups, *["output"] * item.answer_length]
    prompt = len(item.groups)
    queries = range(prompt - 1, prompt + item.answer_length - 1) if item.answer_length else [prompt - 1]
    shares = attention_shares(executor, item)
    for layer, attention in enumerate(attentions):
        weights = attention[0].mean(0)
        for g, name in enumerate(GROUPS):
            keys = [k for k, group in enumerate(groups) if group == name]
            expected = sum(float(weights[q, keys].sum()) for q in queries) / len(queries)
            assert shares[layer, g] == pytest.approx(expected, abs=1e-5)
    no_answer = ItemInput(item.embeds[: len(item.groups)], item.groups, 0)
    assert attention_shares(executor, no_answer)[:, GROUPS.index("output")].abs().max() == 0


def test_table_and_figure(tmp_path, llada_dir, executor_dir, darm):
    spec = _spec("text", llada_dir, executor_dir)
    run = _run(build_pipeline(spec), spec, tmp_path)
    rows = attention_profile(run, build_pipeline(spec), limit=2)
    paths = write_attention(rows, tmp_path / "out")
    with paths[0].open() as handle:
        table = list(csv.DictReader(handle))
    assert {r["outcome"] for r in table} == {"correct", "wrong"} and set(GROUPS) <= set(table[0])
    assert "| text | correct | 0 | 1 |" in paths[1].read_text()
    assert paths[2].read_bytes()[:4] == b"\x89PNG"


def test_the_command_on_a_text_run(tmp_path, llada_dir, executor_dir, darm):
    from latent_darm.evaluation.benchmarks import Example
    from latent_darm.evaluation.runner import evaluate

    spec = _spec("text", llada_dir, executor_dir)
    examples = [Example(f"q{i}", q, "7", "math", {}) for i, q in enumerate(QUESTIONS)]
    evaluate(build_pipeline(spec), examples, tmp_path / "run", batch_size=3, config={"benchmark": "b", "spec": spec},
             progress=False)  # fmt: skip
    code, stdout, stderr = darm("diagnose", tmp_path / "run", "--attention", "--limit", "2", "--device", "cpu",
                                "--out", tmp_path / "att")  # fmt: skip
    assert code == 0, stderr
    assert stdout.split() == [
        str(tmp_path / "att" / name) for name in ("attention.csv", "attention.md", "attention.png")
    ]
    with (tmp_path / "att" / "attention.csv").open() as handle:
        assert sum(int(r["n"]) for r in csv.DictReader(handle) if r["layer"] == "0") == 2
