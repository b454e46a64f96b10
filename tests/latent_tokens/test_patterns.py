"""Who may attend whom, rule by rule, on hand-written examples; and the n = all decoding pass is MDM's."""

from __future__ import annotations

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.decoding import DecodeSettings
from latent_darm.latent_tokens.patterns import causal_pattern, window_pattern
from latent_darm.latent_tokens.train import TrainSettings, new_model
from latent_darm.latent_tokens.variants import MDM, SCDM, SIDM, get_variant


def _matrix(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[ch == "1" for ch in row] for row in rows])


def test_mdm_is_full_attention():
    assert MDM.pattern(2, 4).all()


def test_sidm_clean_sees_clean_masked_sees_clean_and_itself():
    # columns 0,1 clean; 2,3,4 masked
    expected = _matrix(["11000", "11000", "11100", "11010", "11001"])
    assert torch.equal(SIDM.pattern(2, 5), expected)


def test_scdm_masked_sees_clean_and_earlier_masked_in_the_order():
    expected = _matrix(["11000", "11000", "11100", "11110", "11111"])
    assert torch.equal(SCDM.pattern(2, 5), expected)


def test_scdm_targets_see_clean_every_latent_and_themselves_not_each_other():
    # 1 clean, 2 latents (cols 1,2), 2 targets (cols 3,4)
    expected = _matrix(["10000", "11000", "11100", "11110", "11101"])
    assert torch.equal(SCDM.pattern(1, 5, targets=2), expected)


def test_scdm_with_no_latents_is_sidm_for_the_target():
    assert torch.equal(SCDM.pattern(3, 4, targets=1), SIDM.pattern(3, 4, targets=1))


def test_scdm_target_with_every_masked_position_as_latent_sees_what_mdm_sees():
    pattern = SCDM.pattern(2, 6, targets=1)
    assert pattern[-1].all() and torch.equal(pattern[-1], MDM.pattern(2, 6, targets=1)[-1])


def test_per_row_clean_counts_give_one_pattern_per_row():
    batched = SIDM.pattern(torch.tensor([1, 3]), 4)
    assert batched.shape == (2, 4, 4)
    assert torch.equal(batched[0], SIDM.pattern(1, 4))
    assert torch.equal(batched[1], SIDM.pattern(3, 4))


def test_ar_is_causal():
    assert torch.equal(causal_pattern(3), _matrix(["100", "110", "111"]))


def test_window_is_full_over_the_visible_prefix_and_hides_the_rest():
    expected = _matrix(["1110", "1110", "1110", "0001"])
    assert torch.equal(window_pattern(3, 4), expected)


def test_unknown_variant_is_a_one_line_error_naming_it():
    with pytest.raises(ConfigError, match="unknown variant 'bogus'; expected one of mdm, sidm, scdm, ar, ar-mtp"):
        get_variant("bogus")


def test_mdm_decoding_pass_with_reordered_and_dropped_columns_is_the_plain_forward():
    """The latent-token machinery (clean-first order, explicit positions, pattern) at n = all computes exactly
    what the plain full-attention MDM forward computes over the canvas in its natural order."""
    torch.manual_seed(0)
    model = new_model(TrainSettings(layers=2, d_model=32, heads=2), max_length=12).eval()
    mask = model.config.mask_token_id
    canvas = torch.randint(6, 15, (3, 12))
    canvas[:, 5:] = mask
    canvas[:, 7] = 9  # one committed answer token
    plain = model(canvas).logits
    columns = torch.tensor([0, 1, 2, 3, 4, 7, 10, 5, 11, 6, 8, 9])  # clean first, masked in a random order
    reordered = model(canvas[:, columns], position_ids=columns, attention_pattern=MDM.pattern(6, 12, targets=1)).logits
    assert torch.allclose(reordered, plain[:, columns], atol=1e-5)


@pytest.mark.parametrize("variant", ["mdm", "scdm"])
def test_scdm_decoding_with_all_latents_computes_every_masked_position_like_mdm(variant):
    """With n = all, each step's pass holds every masked position (the cost of an MDM step); n = 0 holds none."""
    model = new_model(TrainSettings(layers=1, d_model=32, heads=2), max_length=10).eval()
    prompts = torch.randint(6, 15, (2, 4))
    settings = DecodeSettings()
    full = get_variant(variant).decode(model, prompts, 6, None, settings, torch.Generator().manual_seed(0))
    # step s holds the 4 prompt columns and all 6 answer columns: 10 per pass
    assert full.forward_passes == 6 and full.tokens == 6 * 10
    none = SCDM.decode(model, prompts, 6, 0, settings, torch.Generator().manual_seed(0))
    # step s holds the prompt, s committed tokens and the one being decoded
    assert none.tokens == sum(4 + s + 1 for s in range(6))


def test_chained_scdm_targets_read_the_targets_before_them():
    plain = SCDM.pattern(2, 7, targets=3)
    chained = SCDM.pattern(2, 7, targets=3, chain_targets=True)
    # columns: clean 0-1, latents 2-3, targets 4-6
    assert not plain[6, 4] and not plain[5, 4]
    assert chained[6, 4] and chained[6, 5] and chained[5, 4] and not chained[4, 5] and not chained[5, 6]
    assert torch.equal(plain, chained & ~(torch.ones(7, 7, dtype=torch.bool).tril(-1) & (torch.arange(7) >= 4)))
    assert torch.equal(SCDM.pattern(2, 7, targets=1), SCDM.pattern(2, 7, 1, chain_targets=True))
