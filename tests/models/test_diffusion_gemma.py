"""DiffusionGemma through transformers' own classes: picked by model_type, sampled with its own generate,
plan latents = the encoder's final-norm hidden states of prompt + plan at the plan positions."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

# transformers gained diffusion_gemma during 5.x (5.20, our floor, has it); without it the family's tests skip.
pytest.importorskip("transformers.models.diffusion_gemma", reason="this transformers has no diffusion_gemma")

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.diffusion_gemma.tiny import save_tiny_diffusion_gemma, tiny_diffusion_gemma
from latent_darm.models.diffusion_lm import DiffusionLM


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory, tokenizer):
    model = tiny_diffusion_gemma(tokenizer)
    return save_tiny_diffusion_gemma(tmp_path_factory.mktemp("dgemma") / "tiny", model, tokenizer)


@pytest.fixture(scope="module")
def planner(gemma_dir) -> DiffusionLM:
    return DiffusionLM.from_pretrained(gemma_dir)


def test_loads_by_model_type(planner):
    assert planner.family.name == "DiffusionGemma"
    assert type(planner.model).__name__ == "DiffusionGemmaForBlockDiffusion"
    assert planner.hidden_size == 64 and planner.num_layers == 2


def test_sample_is_the_models_own_generate_and_seeded(planner):
    rows = [planner.prompt_ids("What is 3 + 4?"), planner.prompt_ids("Name a colour.")]
    ids, mask = planner.left_pad(rows)
    config = planner.sampler_config(gen_length=12, steps=3, hidden_layer=-1)
    first = planner.sample(rows, config, torch.Generator().manual_seed(5))
    again = planner.sample(rows, config, torch.Generator().manual_seed(5))
    assert torch.equal(first.sequences, again.sequences)
    torch.manual_seed(5)
    direct = planner.model.generate(ids, attention_mask=mask, max_new_tokens=12, max_denoising_steps=3)
    assert torch.equal(first.sequences, direct.sequences[:, : ids.shape[1] + 12])
    assert first.generated.shape == (2, 12)
    assert bool((first.row_nfe >= 1).all()) and bool((first.row_nfe <= 2 * 3).all())
    # Plan latents: the encoder's final-norm states of prompt + plan, at the plan positions.
    full = torch.cat((mask, torch.ones(2, 12, dtype=mask.dtype)), dim=1)
    encoded = planner.model.model.encoder(input_ids=first.sequences, attention_mask=full).last_hidden_state
    assert first.hidden is not None and first.hidden.shape == (2, 12, 64)
    torch.testing.assert_close(first.hidden, encoded[:, ids.shape[1] :])


def test_generate_plans_and_settings(planner):
    plans = planner.generate(["Add 2 and 2."], planner.sampler_config(gen_length=8, steps=2))
    assert len(plans) == 1 and len(plans[0].token_ids) == 8
    with pytest.raises(ConfigError, match="valid: entropy_bound"):
        planner.sampler_config(gen_length=8, steps=2, remasking="low_confidence")
    # Settings of other families, the last three once accepted and silently ignored: one line naming each.
    others = {"threshold": 0.9, "block_length": 4, "logits_eos_inf": True, "confidence_eos_eot_inf": True}
    for name, value in {**others, "lookahead_choice": "random"}.items():
        with pytest.raises(ConfigError, match=f"^{name} is not a DiffusionGemma sampler setting$"):
            planner.sampler_config(gen_length=8, steps=2, **{name: value})


def test_forward_scores_the_canvas(planner):
    ids = torch.randint(5, 300, (2, 13))
    out = planner.forward(ids, output_hidden=True)
    assert out.logits.shape == (2, 8, planner.model.config.text_config.vocab_size)
    assert out.hidden is not None and out.hidden.shape == (2, 8, 64)


def test_a_bad_config_field_is_a_one_line_error_naming_it(gemma_dir, tmp_path):
    target = tmp_path / "bad"
    shutil.copytree(gemma_dir, target)
    raw = json.loads((target / "config.json").read_text())
    raw["text_config"] = {**raw["text_config"], "num_hidden_layers": "2"}
    (target / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="field 'num_hidden_layers' must be an integer, got '2'"):
        DiffusionLM.from_pretrained(target)
