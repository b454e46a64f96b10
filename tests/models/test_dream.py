"""Dream-v0 natively: the official layout opens without remote code, the forward pass and the sampler equal an
independent port of the official code (tests/reference_dream.py) token for token."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.dream.modeling import DreamModel
from latent_darm.models.dream.sampler import DreamSamplerConfig, reveal_count, timestep_grid
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from tests.reference_dream import ReferenceDream, reference_diffusion_generate


@pytest.fixture(scope="module")
def planner(dream_dir) -> DiffusionLM:
    return DiffusionLM.from_pretrained(dream_dir)


@pytest.fixture(scope="module")
def reference(planner) -> ReferenceDream:
    state = {k: v.clone() for k, v in planner.model.state_dict().items()}
    return ReferenceDream(state, planner.model.config)


def random_batch(planner, seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts (no mask / pad ids inside)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = planner.model.config.vocab_size
    banned = {planner.ids.mask, planner.pad_token_id}
    rows = []
    for length in lengths:
        row = torch.randint(0, vocab, (length,), generator=generator).tolist()
        rows.append([t if t not in banned else 5 for t in row])
    return planner.left_pad(rows)


def test_official_layout_loads_natively(planner, dream_model, dream_dir):
    assert json.loads((dream_dir / "config.json").read_text())["model_type"] == "Dream"
    assert len(list(dream_dir.glob("model-*-of-*.safetensors"))) == 2
    assert planner.family.name == "Dream" and isinstance(planner.model, DreamModel)
    for name, tensor in dream_model.state_dict().items():
        assert torch.equal(planner.model.state_dict()[name], tensor), name
    assert planner.ids.mask == planner.tokenizer.convert_tokens_to_ids("<|mask|>")
    assert planner.ids.eot == planner.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert planner.hidden_size == 64 and planner.num_layers == 2


def test_forward_equals_official_with_padding(planner, reference):
    ids, mask = random_batch(planner, 0, [9, 5, 7])
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    four_d = mask.bool()[:, None, None, :] & mask.bool()[:, None, :, None]
    expected = reference(ids, four_d, positions)
    got = planner.model(ids, mask, positions).logits
    real = mask.bool()
    # float32 summation order differs between torch's attention kernels (torch 2.6 differs by ~1.4e-5); a wrong mask,
    # rotary or padding offset differs by O(1).
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-4)
    # The planner-level forward undoes the shift: position i is scored by raw row i - 1.
    aligned = planner.forward(ids, mask, positions, output_hidden=True)
    torch.testing.assert_close(aligned.logits[:, 1:], got[:, :-1])
    assert aligned.hidden is not None and aligned.hidden.shape == (3, ids.shape[1], 64)


CASES = [
    ("maskgit_plus", 16, 16, [6]),
    ("maskgit_plus", 24, 7, [9, 4, 6]),
    ("topk_margin", 20, 20, [3, 8]),
    ("topk_margin", 32, 5, [7, 7]),
    ("entropy", 16, 3, [5, 10, 2]),
    ("entropy", 12, 12, [8]),
    ("maskgit_plus", 32, 32, [4, 11]),
    ("entropy", 9, 1, [6, 3]),
]


@pytest.mark.parametrize(("alg", "gen_length", "steps", "lengths"), CASES)
def test_sampler_equals_official_greedy(planner, reference, alg, gen_length, steps, lengths):
    ids, mask = random_batch(planner, gen_length * 7 + steps, lengths)
    expected = reference_diffusion_generate(
        reference, ids, mask, max_new_tokens=gen_length, mask_token_id=planner.ids.mask, steps=steps, alg=alg
    )
    config = planner.sampler_config(gen_length=gen_length, steps=steps, remasking=alg)
    out = planner.family.sample(planner.model, ids, mask, config, planner.ids, None)
    assert torch.equal(out.sequences, expected)
    assert out.nfe == steps


@pytest.mark.parametrize(
    ("alg", "options"),
    [
        ("origin", {}),
        ("origin", {"temperature": 0.7, "top_p": 0.9}),
        ("maskgit_plus", {"alg_temp": 0.5}),
        ("topk_margin", {"temperature": 1.0, "top_k": 20}),
        ("entropy", {"temperature": 0.5, "top_p": 0.8, "top_k": 30, "alg_temp": 0.2}),
    ],
)
def test_sampler_equals_official_seeded(planner, reference, alg, options):
    """Random draws come from the same stream: the official code's global RNG, our generator, same seed."""
    ids, mask = random_batch(planner, 3, [7, 4])
    torch.manual_seed(11)
    expected = reference_diffusion_generate(
        reference, ids, mask, max_new_tokens=16, mask_token_id=planner.ids.mask, steps=8, alg=alg, **options
    )
    config = planner.sampler_config(gen_length=16, steps=8, remasking=alg, **options)
    out = planner.family.sample(planner.model, ids, mask, config, planner.ids, torch.Generator().manual_seed(11))
    assert torch.equal(out.sequences, expected)


def test_batched_rows_equal_single_rows(planner):
    """Left padding changes nothing for a row: each row of a padded batch equals that row sampled alone (k is the
    same for every row as long as no row proposes the mask id)."""
    ids, mask = random_batch(planner, 5, [10, 4, 7])
    config = planner.sampler_config(gen_length=16, steps=16)
    batched = planner.family.sample(planner.model, ids, mask, config, planner.ids, None).generated
    for row in range(3):
        alone = ids[row : row + 1, mask[row].bool()]
        single = planner.family.sample(planner.model, alone, None, config, planner.ids, None).generated
        assert torch.equal(batched[row], single[0])


def test_timestep_schedule_reveals_official_counts():
    """N = 32, steps = 32: the float32 grid reveals 0, then 1 ×30, then 2 (not N / steps each step)."""
    masked = torch.ones(1, 32, dtype=torch.bool)
    grid = timestep_grid(32)
    assert grid.dtype == torch.float32
    counts = []
    for i in range(32):
        count = reveal_count(masked, grid, i)
        counts.append(count)
        masked[0, torch.nonzero(masked[0])[:count, 0]] = False
    assert counts == [0] + [1] * 30 + [2]
    # Masks averaged over the batch: rows with 5 and 6 masks at the last step reveal int(5.5) = 5 each.
    uneven = torch.zeros(2, 8, dtype=torch.bool)
    uneven[0, :5], uneven[1, :6] = True, True
    assert reveal_count(uneven, timestep_grid(4), 3) == 5


def test_latent_rows_plan_and_predictor(planner):
    """Latents = final-norm hidden states of the last forward pass, at the plan positions ("plan") or one row to the
    left ("predictor": the rows whose logits scored the plan positions)."""
    ids, mask = random_batch(planner, 2, [6, 3])
    base = dict(gen_length=8, steps=4, hidden_layer=-1)
    plan = planner.family.sample(planner.model, ids, mask, planner.sampler_config(**base), planner.ids, None)
    pred = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(**base, latent_rows="predictor"), planner.ids, None
    )
    assert torch.equal(plan.sequences, pred.sequences)
    assert plan.hidden is not None and pred.hidden is not None and plan.hidden.shape == (2, 8, 64)
    torch.testing.assert_close(pred.hidden[:, 1:], plan.hidden[:, :-1])
    # The last pass ran on the canvas as it was before the last step.
    before = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(**base, denoise_fraction=3 / 4), planner.ids, None
    )
    full_mask = torch.cat((mask, torch.ones(2, 8, dtype=mask.dtype)), 1)
    positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 1)
    hidden = planner.model(before.sequences, full_mask, positions).last_hidden_state
    p = ids.shape[1]
    torch.testing.assert_close(plan.hidden, hidden[:, p : p + 8])
    torch.testing.assert_close(pred.hidden, hidden[:, p - 1 : p + 7])


def test_threshold_mode_reveals_faster_and_one_fits_greedy(planner):
    """τ above every confidence reveals one position per pass (the most confident): the same tokens as the exact
    sampler with steps = gen length; a low τ takes fewer passes."""
    ids, mask = random_batch(planner, 4, [6, 9])
    exact = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(gen_length=12, steps=12), planner.ids, None
    )
    one = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(gen_length=12, steps=12, threshold=1.0), planner.ids, None
    )
    fast = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(gen_length=12, steps=12, threshold=0.05), planner.ids, None
    )
    assert one.nfe == 12 and fast.nfe < 12
    assert (fast.generated != planner.ids.mask).all()
    # k = 1 per step (grid with steps = N reveals 0 first): compare only that every token is revealed.
    assert (exact.generated != planner.ids.mask).all() and (one.generated != planner.ids.mask).all()


def test_prefix_cache_padded_batch_equals_rows_alone(planner):
    """The prefix cache keeps each row's positions and pad mask: a padded batch gives each row what that row alone
    gives with the same cache (Fast-dLLM's copy overwrites position ids and breaks this)."""
    ids, mask = random_batch(planner, 6, [9, 3, 6])
    config = planner.sampler_config(gen_length=12, steps=12, cache="prefix")
    batched = planner.family.sample(planner.model, ids, mask, config, planner.ids, None).generated
    for row in range(3):
        alone = ids[row : row + 1, mask[row].bool()]
        single = planner.family.sample(planner.model, alone, None, config, planner.ids, None).generated
        assert torch.equal(batched[row], single[0])


def test_prefix_cache_first_pass_is_exact(planner):
    """The first pass of the cached sampler is a full pass: after one step it equals the exact sampler."""
    ids, mask = random_batch(planner, 8, [5, 8])
    one_step = dict(gen_length=8, steps=4, denoise_fraction=1 / 4)
    exact = planner.family.sample(planner.model, ids, mask, planner.sampler_config(**one_step), planner.ids, None)
    cached = planner.family.sample(
        planner.model, ids, mask, planner.sampler_config(**one_step, cache="prefix"), planner.ids, None
    )
    assert int((exact.generated != planner.ids.mask).sum()) == 2  # k = int(8 · (1 − s/t)) = 1 per row
    assert torch.equal(exact.sequences, cached.sequences)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"remasking": "low_confidence"}, "valid: maskgit_plus, topk_margin, entropy, origin"),
        ({"block_length": 8}, "block_length is not a Dream sampler setting"),
        ({"steps": 20}, "steps 20 exceeds gen_length 16"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"cache": "dual"}, "valid: none, prefix"),
        ({"cfg_scale": 1.0}, "cfg_scale is not a Dream sampler setting"),
        ({"lookahead": 2}, "lookahead is not a Dream sampler setting"),
        ({"threshold": 0.9, "remasking": "entropy"}, "threshold needs remasking"),
    ],
)
def test_bad_sampler_settings(planner, options, message):
    with pytest.raises(ConfigError, match=message):
        planner.sampler_config(**{"gen_length": 16, "steps": 16, **options})


def test_llada_refuses_dream_settings(llada_dir):
    llada = DiffusionLM.from_pretrained(llada_dir)
    with pytest.raises(ConfigError, match="valid: low_confidence, random"):
        llada.sampler_config(gen_length=32, steps=32, remasking="entropy")
    with pytest.raises(ConfigError, match="top_k is not a LLaDA sampler setting"):
        llada.sampler_config(gen_length=32, steps=32, top_k=5)
    assert llada.sampler_config(gen_length=64, steps=64) == LLaDASamplerConfig(gen_length=64, steps=64)
    with pytest.raises(ConfigError, match="a DreamSamplerConfig is not a LLaDA sampler config"):
        llada.generate(["Add 2 and 2."], DreamSamplerConfig(gen_length=8, steps=8))


def test_bad_checkpoints(dream_dir, tmp_path, dream_tokenizer):
    def copy(name: str) -> object:
        target = tmp_path / name
        shutil.copytree(dream_dir, target)
        return target

    unknown = copy("unknown")
    raw = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**raw, "model_type": "qwen2"}))
    with pytest.raises(
        CheckpointError, match=r"model_type 'qwen2' is not a supported planner family; supported: llada, Dream"
    ):
        DiffusionLM.from_pretrained(unknown)

    no_mask = copy("no_mask")
    (no_mask / "config.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "mask_token_id"}))
    with pytest.raises(CheckpointError, match="missing required field 'mask_token_id'"):
        DiffusionLM.from_pretrained(no_mask)

    no_mask_token = copy("no_mask_token")
    config = json.loads((no_mask_token / "tokenizer_config.json").read_text())
    config.pop("mask_token", None)
    (no_mask_token / "tokenizer_config.json").write_text(json.dumps(config))
    special = no_mask_token / "special_tokens_map.json"
    if special.exists():
        special.write_text(json.dumps({k: v for k, v in json.loads(special.read_text()).items() if k != "mask_token"}))
    with pytest.raises(CheckpointError, match="tokenizer has no mask token"):
        DiffusionLM.from_pretrained(no_mask_token)

    missing = copy("missing_shard_tensor")
    index = json.loads((missing / "model.safetensors.index.json").read_text())
    index["weight_map"].pop("lm_head.weight")
    (missing / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        DiffusionLM.from_pretrained(missing)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_key_value_heads", "2", "field 'num_key_value_heads' must be an integer, got '2'"),
        ("hidden_size", True, "field 'hidden_size' must be an integer, got True"),
        ("rope_theta", "abc", "field 'rope_theta' must be a number, got 'abc'"),
        ("rms_norm_eps", -1e-6, "field 'rms_norm_eps' must be a finite number > 0"),
        ("num_hidden_layers", 10**12, "field 'num_hidden_layers' = 1000000000000 is absurd"),
        ("vocab_size", 10**13, "describe a model of about"),
    ],
)
def test_bad_config_fields_are_one_line_errors_naming_the_field(dream_dir, tmp_path, field, value, message):
    target = tmp_path / "bad"
    shutil.copytree(dream_dir, target)
    raw = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**raw, field: value}))
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        DiffusionLM.from_pretrained(target)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


def test_planner_forward_is_the_same_contract_for_llada(llada_dir):
    """LLaDA's logits already score their own rows; position ids pass through to the network."""
    llada = DiffusionLM.from_pretrained(llada_dir)
    ids = torch.randint(0, 300, (2, 9))
    out = llada.forward(ids, output_hidden=True)
    direct = llada.model(ids, hidden_layer=-1)
    torch.testing.assert_close(out.logits, direct.logits)
    assert out.hidden is not None and torch.equal(out.hidden, direct.hidden)
    shifted = llada.forward(ids, position_ids=torch.arange(3, 12))
    torch.testing.assert_close(shifted.logits, llada.model(ids, position_ids=torch.arange(3, 12)).logits)
