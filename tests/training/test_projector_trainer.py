"""Stage 2: a projector learns to carry the plan's information to the executor, on the exact inference layout, with
labels on the answer tokens only, and a killed run resumes to the very same weights.

The synthetic task: the latents of each question are the executor's own embedding of the answer letter seen through
a fixed random isometry (64 × 48) plus noise; nothing in the question gives the letter away. The executor is a tiny
Llama first taught, on real token embeddings, to answer "Answer: X" with the letter its prefix shows (a random
executor cannot be steered by a distant prefix at all), so the projector succeeds when it learns to map the latents
back onto what the executor reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors import safe_open

from latent_darm.errors import CheckpointError, ConfigError, DataError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.tiny import random_llama, train_bpe_tokenizer
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.projector.model import ModelSignature, Projector
from latent_darm.training.data import TrainingExample, example_id, format_target
from latent_darm.training.latent_cache import LatentCache
from latent_darm.training.projector_trainer import (
    IGNORE_INDEX,
    ProjectorTrainer,
    ProjectorTrainingConfig,
    answer_loss,
    build_batch,
    encode_examples,
    make_accelerator,
    train_projector,
)

LETTERS = "BCDE"
PLAN = 16  # soft tokens; many of them, so the executor below learns to read its prefix quickly
PLANNER_DIM = 64  # the conftest planner's hidden size, so the latent pipeline can load what we train
TEMPLATES = PromptTemplates(executor_latent="{question}")
READER_STEPS = 300
QUICK = dict(warmup_steps=2, mixed_precision="no", max_new_tokens=6, eval_every=1000, save_every=1000)


def fresh_accelerate_state_between_processes() -> None:
    """Each run builds its own Accelerator, as a new process would; a killed run must not leak its state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    fresh_accelerate_state_between_processes()


def _examples(n: int, start: int, seed: int) -> list[TrainingExample]:
    rng = random.Random(seed)
    questions = [f"Question {i}: which colour wins?" for i in range(start, start + n)]
    return [TrainingExample(example_id("syn", q), q, rng.choice(LETTERS), "mc", "syn") for q in questions]


def _hint_ids(tokenizer) -> dict[str, int]:
    """Each letter's token as it appears in the answer "Answer: X"."""
    return {letter: tokenizer(f"Answer: {letter}", add_special_tokens=False).input_ids[-1] for letter in LETTERS}


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory):
    """A tiny Llama trained (full weights, a few hundred steps) to answer "Answer: X" with the letter whose
    embedding fills its soft prefix, every question seen with every letter (so it learns nothing about questions);
    saved, so each test opens a fresh copy."""
    corpus = [f"system user assistant Question {i}: which colour wins? Answer: {LETTERS[i % 4]}" for i in range(200)]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=300)
    executor = AutoregressiveLM(random_llama(tokenizer, seed=0), tokenizer, name_or_path="reader")
    questions = [f"Question {n}: which colour wins?" for n in random.Random(0).sample(range(10_000), 64)]
    pairs = [TrainingExample(str(i), q, letter, "mc", "syn") for i, q in enumerate(questions) for letter in LETTERS]
    encoded = encode_examples(executor, pairs, TEMPLATES, "prefix", PLAN)
    hints = _hint_ids(tokenizer)
    optimizer = torch.optim.AdamW(executor.model.parameters(), lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    executor.model.train()
    for _ in range(READER_STEPS):
        items = [encoded[i] for i in torch.randint(len(encoded), (16,), generator=generator).tolist()]
        soft = torch.stack([executor.embed([hints[item.example.target]] * PLAN) for item in items])
        loss, _ = answer_loss(executor.model, build_batch(executor, soft, items))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 5e-3:
            break
    directory = tmp_path_factory.mktemp("reader") / "executor"
    executor.model.eval()
    executor.save_pretrained(directory)
    return directory


@pytest.fixture
def reader(reader_dir) -> AutoregressiveLM:
    return AutoregressiveLM.from_pretrained(reader_dir)


@pytest.fixture(scope="module")
def task(tmp_path_factory, reader_dir):
    """(train, held_out, cache): latents = isometry · (letter embedding / its RMS) + noise, repeated L times."""
    executor = AutoregressiveLM.from_pretrained(reader_dir)
    train, held_out = _examples(64, 0, seed=1), _examples(16, 1000, seed=2)
    generator = torch.Generator().manual_seed(0)
    isometry, _ = torch.linalg.qr(torch.randn(PLANNER_DIM, executor.hidden_size, generator=generator))
    hints = _hint_ids(executor.tokenizer)
    cache = LatentCache.open(tmp_path_factory.mktemp("latents"), {"synthetic": "rotated answer embeddings"})
    latents = {}
    for example in train + held_out:
        embedding = executor.input_embeddings.weight[hints[example.target]].detach()
        signal = isometry @ (embedding / embedding.pow(2).mean().sqrt())
        latents[example.id] = signal.expand(PLAN, PLANNER_DIM) + 0.1 * torch.randn(
            PLAN, PLANNER_DIM, generator=generator
        )
    cache.add(latents, {key: "" for key in latents})
    return train, held_out, cache


def _projector(executor: AutoregressiveLM, **config) -> Projector:
    torch.manual_seed(0)
    planner = ModelSignature(PLANNER_DIM, None, "synthetic-planner")
    return Projector.for_pair(planner, executor, **{"plan_length": PLAN, "hidden_dim": 64, **config})


def _history(out) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_training_carries_the_answer_through_the_latents(tmp_path, task, reader):
    train, held_out, cache = task
    config = ProjectorTrainingConfig(
        lr=1e-2,
        warmup_steps=10,
        epochs=20,
        max_steps=100,
        batch_size=8,
        eval_every=50,
        save_every=1000,
        mixed_precision="no",
        max_new_tokens=6,
    )
    summary = train_projector(
        _projector(reader), reader, cache, train, held_out, tmp_path, config, templates=TEMPLATES, progress=False
    )
    history = _history(tmp_path)
    untrained = history[0]
    assert untrained["step"] == 0 and untrained["val_accuracy"] <= 0.5
    train_losses = [r["train_loss"] for r in history if "train_loss" in r]
    assert train_losses[-1] < 0.2 * train_losses[0]
    assert summary.steps == 100 and summary.best_step in (50, 100)
    assert summary.best_val_loss < 0.2 * untrained["val_loss"]
    assert summary.final_val_accuracy >= 0.9 > untrained["val_accuracy"]
    assert (tmp_path / "curve.png").stat().st_size > 0
    saved = Projector.from_pretrained(tmp_path / "projector", executor=reader)
    record = saved.config.training
    assert record["step"] == summary.best_step and record["val_loss"] == summary.best_val_loss
    # The saved projector answers like the trained one did, through the executor's own soft-token generation.
    items = encode_examples(reader, held_out, TEMPLATES, "prefix", PLAN)
    with torch.no_grad():
        soft = saved(cache.load([e.id for e in held_out]).float())
    answers = reader.generate_from_embeddings(soft, [i.prompt for i in items], max_new_tokens=6)
    assert sum(a.text == f"Answer: {e.target}" for a, e in zip(answers, held_out, strict=True)) >= 0.9 * len(held_out)


def test_labels_sit_on_the_answer_tokens_after_the_soft_prefix(task, reader):
    train, _, _ = task
    examples = [train[0], train[5], train[9]]
    items = encode_examples(reader, examples, TEMPLATES, "prefix", PLAN)
    torch.manual_seed(1)
    soft = torch.randn(len(items), PLAN, reader.hidden_size) * 0.3
    batch = build_batch(reader, soft, items)
    with torch.no_grad():
        loss, tokens = answer_loss(reader.model, batch)

    # Independently: each row alone, unpadded, as inference lays it out; log-probs of each target token read at the
    # position before it.
    log_probs = []
    for row, item in zip(soft, items, strict=True):
        prompt = reader.chat_ids(item.prompt)
        assert list(item.after) == prompt and not item.before
        embeds = torch.cat([row, reader.embed(prompt + list(item.target))])[None]
        with torch.no_grad():
            logits = reader.model(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
        start = PLAN + len(prompt)
        for j, token in enumerate(item.target):
            log_probs.append(float(logits[start + j - 1, token]))
        # The first answer token is read where inference reads it: the greedy choice there is what it generates.
        first = reader.generate_from_embeddings([row], [item.prompt], max_new_tokens=1)[0].token_ids[0]
        assert first == int(logits[start - 1].argmax())
    assert tokens == len(log_probs) == sum(len(i.target) for i in items)
    assert float(loss) == pytest.approx(-sum(log_probs) / len(log_probs), rel=1e-5)

    # The labels: -100 on soft tokens, prompt and padding; the target ids on their own positions; positions 0..n-1.
    for i, item in enumerate(items):
        start = PLAN + len(item.after)
        real = int(batch.attention_mask[i].sum())
        assert real == start + len(item.target)
        assert batch.labels[i, start:real].tolist() == list(item.target)
        assert (batch.labels[i, :start] == IGNORE_INDEX).all() and (batch.labels[i, real:] == IGNORE_INDEX).all()
        assert batch.position_ids[i, :real].tolist() == list(range(real))

    # The authors' bug: ignored labels for the L soft positions appended at the end shifts every label by L.
    shifted = batch.labels.clone()
    for i in range(len(items)):
        row = batch.labels[i][PLAN:].tolist() + [IGNORE_INDEX] * PLAN
        shifted[i] = torch.tensor(row)
    with torch.no_grad():
        wrong, _ = answer_loss(
            reader.model, type(batch)(batch.inputs_embeds, batch.attention_mask, batch.position_ids, shifted)
        )
    assert abs(float(wrong) - float(loss)) > 0.1


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, task, reader_dir):
    train, held_out, cache = task
    # Odd micro-batch count per epoch with accumulation (partial last step), noise on, a kill mid-epoch.
    config = ProjectorTrainingConfig(
        lr=3e-3, epochs=2, batch_size=2, grad_accum=2, latent_noise=0.3, **{**QUICK, "save_every": 3}
    )
    data = train[:14], held_out[:2]

    def run(out, on_step=None):
        executor = AutoregressiveLM.from_pretrained(reader_dir)
        return train_projector(
            _projector(executor),
            executor,
            cache,
            *data,
            out,
            config,
            templates=TEMPLATES,
            progress=False,
            on_step=on_step,
        )

    whole = run(tmp_path / "whole")
    assert whole.steps == 8  # 7 micro-batches → 4 optimizer steps per epoch

    def kill(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill)
    assert sorted(p.name for p in (tmp_path / "killed/checkpoints").iterdir()) == ["step-3"]
    fresh_accelerate_state_between_processes()
    resumed = run(tmp_path / "killed")
    assert resumed.resumed_from == 3 and resumed.steps == 8
    for name in ("whole", "killed"):
        assert sorted(p.name for p in (tmp_path / name / "checkpoints").iterdir()) == ["step-6", "step-8"]
    expected = Projector.from_pretrained(tmp_path / "whole/projector").state_dict()
    got = Projector.from_pretrained(tmp_path / "killed/projector").state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    curves = [
        [r.get(key, -1) for r in _history(tmp_path / name) for key in ("step", "train_loss", "val_loss")]
        for name in ("whole", "killed")
    ]
    assert curves[0][::3] == [0, 3, 6, 8] and curves[0] == pytest.approx(curves[1], rel=1e-5)


def test_lora_trains_the_adapter_and_still_the_projector(tmp_path, task, reader, reader_dir, llada_dir):
    train, held_out, cache = task
    projector = _projector(reader)
    before = {k: v.clone() for k, v in projector.state_dict().items()}
    base = {k: v.clone() for k, v in reader.model.state_dict().items()}
    config = ProjectorTrainingConfig(lr=1e-2, lora=True, lora_lr=1e-2, max_steps=3, batch_size=4, **QUICK)
    train_projector(
        projector, reader, cache, train[:12], held_out[:2], tmp_path, config, templates=TEMPLATES, progress=False
    )
    assert all(not torch.equal(before[k], v) for k, v in projector.state_dict().items())  # the authors' bug: frozen
    lora = {k: v for k, v in reader.model.named_parameters() if "lora_B" in k}
    assert lora and all(v.abs().sum() > 0 for v in lora.values())  # B starts at zero
    for name, value in reader.model.get_base_model().state_dict().items():
        clean = name.replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(value, base[clean]), name
    assert (tmp_path / "projector/adapter/adapter_config.json").is_file()
    with safe_open(str(tmp_path / "checkpoints/step-3/model_1.safetensors"), "pt") as handle:
        assert all("lora_" in key for key in handle.keys())  # checkpoints hold the adapter, not the executor

    # The latent pipeline merges the adapter it finds beside the projector into its own copy of the executor.
    planner = {"kind": "ddlm", "model": str(llada_dir), "gen_length": PLAN, "steps": PLAN, "block_length": PLAN}
    spec = {
        "kind": "latent",
        "planner": planner,
        "projector": str(tmp_path / "projector"),
        "executor": {"kind": "arm", "model": str(reader_dir), "max_new_tokens": 4},
    }
    models = ModelCache(torch.float32, "cpu")
    pipeline = build_pipeline(spec, models)
    plain = models.autoregressive(str(reader_dir))
    assert pipeline.executor is not plain
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(pipeline.executor.model.state_dict()[q], plain.model.state_dict()[q])
    assert len(pipeline.run(["Question 5: which colour wins?"], "mc")) == 1


def test_noised_latents_control_trains_on_other_inputs(tmp_path, task, reader_dir):
    train, held_out, cache = task

    def run(out, noise):
        executor = AutoregressiveLM.from_pretrained(reader_dir)
        config = ProjectorTrainingConfig(lr=1e-2, max_steps=3, batch_size=4, latent_noise=noise, **QUICK)
        train_projector(
            _projector(executor),
            executor,
            cache,
            train[:12],
            held_out[:2],
            out,
            config,
            templates=TEMPLATES,
            progress=False,
        )
        return _history(out)

    clean, noised, again = run(tmp_path / "clean", 0.0), run(tmp_path / "noised", 2.0), run(tmp_path / "again", 2.0)
    assert clean[-1]["train_loss"] != noised[-1]["train_loss"]
    assert clean[0]["val_loss"] != noised[0]["val_loss"]  # validation sees noised latents too
    assert noised == again  # the noise is seeded: the control is reproducible
    config = Projector.from_pretrained(tmp_path / "noised/projector").config
    assert config.training["config"]["latent_noise"] == 2.0


def test_a_directory_of_another_configuration_is_refused(tmp_path, task, reader_dir):
    train, held_out, cache = task

    def run(projector_config=None, **changes):
        executor = AutoregressiveLM.from_pretrained(reader_dir)
        config = ProjectorTrainingConfig(**{"lr": 1e-2, "max_steps": 1, "batch_size": 4, **QUICK, **changes})
        projector = _projector(executor, **(projector_config or {}))
        return train_projector(
            projector, executor, cache, train[:8], held_out[:1], tmp_path, config, templates=TEMPLATES, progress=False
        )

    run()
    assert run(log_every=5).steps == 1  # cosmetic settings may change; nothing is redone
    with pytest.raises(ConfigError, match=r"made with a different 'training.lr' \(0.01 there, 0.02 now\)"):
        run(lr=2e-2)
    with pytest.raises(ConfigError, match="different 'projector.hidden_dim'"):
        run({"hidden_dim": 32})


def test_bad_input(tmp_path, task, reader):
    train, held_out, cache = task
    config = ProjectorTrainingConfig(max_steps=1, **QUICK)
    wrong_dim = Projector.for_pair(ModelSignature(32, None, "other"), reader, plan_length=PLAN, hidden_dim=8)
    with pytest.raises(
        ConfigError,
        match=r"latents \[L, d\] = \[16, 64\], but the projector expects plan_length 16 "
        r"and planner_dim 32",
    ):
        train_projector(wrong_dim, reader, cache, train[:4], [], tmp_path, config, templates=TEMPLATES)
    unseen = _examples(1, 5000, seed=3)
    with pytest.raises(DataError, match=f"no latents for example '{unseen[0].id}'"):
        train_projector(_projector(reader), reader, cache, unseen, [], tmp_path, config, templates=TEMPLATES)
    with pytest.raises(DataError, match="no training examples"):
        train_projector(_projector(reader), reader, cache, [], held_out, tmp_path, config, templates=TEMPLATES)
    with pytest.raises(ConfigError, match="batch_size must be ≥ 1"):
        ProjectorTrainingConfig(batch_size=0)
    with pytest.raises(ConfigError, match="mixed_precision must be one of auto, no, bf16"):
        ProjectorTrainingConfig(mixed_precision="fp8")
    # Inline placement puts the soft tokens where the text prompt's {plan} goes; prompts without one are refused
    # when they are read, so an inline projector never meets a prompt with no plan slot.
    with pytest.raises(ConfigError, match=r"template 'executor_text' has no \{plan\} placeholder"):
        PromptTemplates(executor_latent="{question}", executor_text="{question}")


def test_a_given_reply_is_the_target_and_the_gold_stays_the_answer(task, reader):
    """``TrainingExample.reply`` replaces the formatted answer as the executor's target (the toy world trains on
    its derivation); without one, the target is the formatted gold."""
    train, _, _ = task
    plain = train[0]
    derived = dataclasses.replace(plain, reply=f"I think so. Answer: {plain.target}")
    items = encode_examples(reader, [plain, derived], TEMPLATES, "prefix", PLAN)
    prompt = TEMPLATES.latent_executor_prompt(plain.question, plain.answer_type)
    assert list(items[0].target) == reader.reply_ids(prompt, format_target(plain.target, plain.answer_type))
    assert list(items[1].target) == reader.reply_ids(prompt, derived.reply)
    assert items[1].example.target == plain.target and items[0].target != items[1].target


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, task, reader_dir, caplog):
    train, held_out, cache = task
    config = ProjectorTrainingConfig(lr=3e-3, epochs=1, batch_size=2, **{**QUICK, "save_every": 2})
    data = train[:12], held_out[:2]

    def run(out, on_step=None):
        executor = AutoregressiveLM.from_pretrained(reader_dir)
        return train_projector(
            _projector(executor), executor, cache, *data, out, config, templates=TEMPLATES, progress=False,
            on_step=on_step,
        )  # fmt: skip

    whole = run(tmp_path / "whole")

    def kill(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", kill)
    checkpoints = tmp_path / "cut/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4"]
    weights = checkpoints / "step-4/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    fresh_accelerate_state_between_processes()
    with caplog.at_level(logging.WARNING, logger="latent_darm"):
        resumed = run(tmp_path / "cut")
    assert resumed.resumed_from == 2 and resumed.steps == whole.steps
    assert [r.getMessage().split(" is unreadable")[0] for r in caplog.records if r.name.startswith("latent_darm")] == [
        f"checkpoint {checkpoints / 'step-4'}"
    ]
    expected = Projector.from_pretrained(tmp_path / "whole/projector").state_dict()
    got = Projector.from_pretrained(tmp_path / "cut/projector").state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    # Every checkpoint damaged: refused, not silently restarted.
    for path in checkpoints.iterdir():
        (path / "model.safetensors").write_bytes(b"\0" * 8)
    fresh_accelerate_state_between_processes()
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        run(tmp_path / "cut")


@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_spares_biases_and_norms_as_the_authors_trainer_did(tmp_path, task, reader, decay_all):
    train, held_out, cache = task
    projector = _projector(reader)
    config = ProjectorTrainingConfig(weight_decay=0.1, decay_biases_and_norms=decay_all, **QUICK)
    trainer = ProjectorTrainer(
        projector, reader, cache, train[:4], held_out[:2], tmp_path, config, TEMPLATES, make_accelerator(config), {}
    )
    decay = {id(p): group["weight_decay"] for group in trainer.optimizer.param_groups for p in group["params"]}
    names = {name: decay[id(p)] for name, p in projector.named_parameters()}
    assert names == {name: 0.1 if (p.dim() == 2 or decay_all) else 0.0 for name, p in projector.named_parameters()}
    assert sorted(n for n, d in names.items() if d == 0.0) == ([] if decay_all else ["layers.0.bias", "layers.2.bias",
                                                                                     "layers.3.weight"])  # fmt: skip


def test_lstsq_init_starts_below_a_random_init_on_held_out_loss(task, reader):
    """``--init lstsq`` on this task: the map from latents to the hint token's embedding (the "decoded plan token"
    at every position), fitted on the training latents, gives a lower held-out answer loss than the random init."""
    from latent_darm.training.projector_lstsq import lstsq_projector, plan_token_embeddings

    train, held_out, cache = task
    hints = _hint_ids(reader.tokenizer)
    targets = plan_token_embeddings(reader, [[hints[e.target]] * PLAN for e in train])
    random_init, seeded = _projector(reader), _projector(reader)
    assert torch.equal(random_init.layers[0].weight, seeded.layers[0].weight)  # the same start before the seed
    lstsq_projector(seeded, cache.load([e.id for e in train]).float(), targets, ridge=1e-3)
    encoded = encode_examples(reader, held_out, TEMPLATES, "prefix", PLAN)
    latents = cache.load([e.id for e in held_out]).float()

    def held_out_loss(projector: Projector) -> float:
        with torch.no_grad():
            return float(answer_loss(reader.model, build_batch(reader, projector(latents), encoded))[0])

    assert held_out_loss(seeded) < 0.5 * held_out_loss(random_init)
