"""Training batches: the clean-first reordering keeps true positions and masks only answer tokens; the window
objectives put their loss where the doc says; training resumes to the same weights as an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from latent_darm.latent_tokens.objectives import ar_batch, window_batch
from latent_darm.latent_tokens.tasks import WorldConfig, encode_rows, generate_splits
from latent_darm.latent_tokens.train import MODEL_DIR, TrainSettings, train_variant
from latent_darm.latent_tokens.variants import get_variant
from latent_darm.models.llada.checkpoint import load_llada

MASK = 4


def _rows() -> tuple[torch.Tensor, int]:
    config = WorldConfig(train_size=40, test_size=2)
    return encode_rows(config, generate_splits(config)["train"]), config.prompt_length


@pytest.mark.parametrize("variant", ["mdm", "sidm", "scdm"])
def test_diffusion_batch_is_a_clean_first_reordering_masking_only_answer_tokens(variant):
    rows, prompt = _rows()
    batch = get_variant(variant).batch(rows, prompt, MASK, torch.Generator().manual_seed(0))
    for b in range(rows.shape[0]):
        positions = batch.position_ids[b]
        assert sorted(positions.tolist()) == list(range(rows.shape[1]))  # a permutation: true positions kept
        masked = batch.input_ids[b] == MASK
        clean = int((~masked).sum())
        assert not masked[:clean].any() and masked[clean:].all()  # clean first
        assert (positions[masked] >= prompt).all()  # only answer tokens are masked
        assert torch.equal(batch.input_ids[b][~masked], rows[b][positions[~masked]])
        assert torch.equal(batch.labels[b][masked], rows[b][positions[masked]])
        assert (batch.labels[b][~masked] == -100).all()
        assert torch.equal(batch.pattern[b], get_variant(variant).pattern(clean, rows.shape[1]))


def test_ar_batch_predicts_each_answer_token_from_the_column_before():
    rows, prompt = _rows()
    batch = ar_batch(rows, prompt)
    assert torch.equal(batch.labels[:, prompt - 1 : -1], rows[:, prompt:])
    assert (batch.labels[:, : prompt - 1] == -100).all() and (batch.labels[:, -1] == -100).all()


@pytest.mark.parametrize(("ntp", "window"), [(False, 3), (True, None)])
def test_window_batches_mask_the_suffix_and_take_loss_in_the_window(ntp, window):
    rows, prompt = _rows()
    batch = window_batch(rows, prompt, MASK, window, torch.Generator().manual_seed(1), ntp=ntp)
    length = rows.shape[1]
    for b in range(rows.shape[0]):
        masked = batch.input_ids[b] == MASK
        cut = int(masked.nonzero()[0])
        assert cut >= prompt and masked[cut:].all() and not masked[:cut].any()
        loss_at = (batch.labels[b] != -100).nonzero().flatten().tolist()
        rest = length - cut
        expected = 1 if ntp else min(window, rest)
        assert loss_at == list(range(cut, cut + expected))
        visible = length if ntp else cut + expected
        assert batch.pattern[b][:visible, :visible].all()
        assert not batch.pattern[b][:visible, visible:].any()


def test_training_resumes_to_the_same_weights(tmp_path):
    rows, prompt = _rows()
    settings = TrainSettings(layers=1, d_model=16, heads=2, steps=6, batch_size=4, warmup_steps=2, checkpoint_every=2)
    train_variant("scdm", rows, prompt, settings, tmp_path / "straight")

    calls = []

    def crash(n: int) -> None:
        calls.append(n)
        if len(calls) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_variant("scdm", rows, prompt, settings, tmp_path / "resumed", on_step=crash)
    assert (tmp_path / "resumed" / "state-00000004.json").exists()
    train_variant("scdm", rows, prompt, settings, tmp_path / "resumed")
    a = load_llada(tmp_path / "straight" / MODEL_DIR).state_dict()
    b = load_llada(tmp_path / "resumed" / MODEL_DIR).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
