"""Issue 22's training options: the absolute position embedding (latent-tokens world only, LLaDA unchanged), the
special logits out of the training softmax, EMA with warm-up, and every option in the model cache key."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.objectives import batch_loss, excluded_ids
from latent_darm.latent_tokens.tasks import WorldConfig, encode_rows, generate_splits
from latent_darm.latent_tokens.tokenizer import VOCABULARY
from latent_darm.latent_tokens.train import MODEL_DIR, TrainSettings, ema_decay, new_model, train_variant
from latent_darm.latent_tokens.variants import AR, AR_MTP, MDM, SCDM, SIDM
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.llada.configuration import LLaDAConfig

SMALL = TrainSettings(layers=1, d_model=32, heads=2, steps=6, batch_size=4, warmup_steps=2, checkpoint_every=3)


@pytest.fixture(scope="module")
def rows():
    config = WorldConfig(train_size=40, test_size=2)
    return encode_rows(config, generate_splits(config)["train"]), config.prompt_length


def test_plain_llada_configs_have_no_position_embedding():
    config = LLaDAConfig(d_model=32, n_heads=2, n_layers=1, vocab_size=40, max_sequence_length=16, mlp_hidden_size=64)
    assert "absolute_position_embedding" not in config.to_dict()
    from latent_darm.models.llada.modeling import LLaDAModelLM

    assert not any("wpe" in name for name in LLaDAModelLM(config).state_dict())


def test_the_position_embedding_follows_the_position_ids_and_survives_a_checkpoint(tmp_path):
    model = new_model(SMALL, max_length=12).eval()
    assert model.config.absolute_position_embedding and model.config.to_dict()["absolute_position_embedding"]
    ids = torch.randint(5, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        straight = model(ids).logits
        shuffled = model(ids[:, order], position_ids=order).logits
        assert torch.allclose(shuffled, straight[:, order], atol=1e-5)  # gathered by the same order
        model.model.transformer.wpe.weight.normal_()
        assert not torch.allclose(model(ids).logits, straight, atol=1e-3)  # and it is used
    save_llada(model, tmp_path)
    loaded = load_llada(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_special_logits_leave_the_training_softmax(rows):
    model = new_model(SMALL, max_length=rows[0].shape[1])
    batch = MDM.batch(rows[0][:8], rows[1], model.config.mask_token_id, torch.Generator().manual_seed(0))
    plain = batch_loss(model, batch)
    restricted = batch_loss(model, batch, no_special_logits=True)
    assert torch.isfinite(restricted) and restricted < plain  # a smaller partition function
    restricted.backward()
    assert model.model.transformer.ff_out.weight.grad[excluded_ids(model)].abs().sum() == 0


def test_ema_warms_up_to_its_target():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 100_000) == 0.999


def test_ema_weights_are_the_evaluated_ones(rows, tmp_path):
    plain = train_variant("scdm", rows[0], rows[1], SMALL, tmp_path / "plain")
    averaged = train_variant("scdm", rows[0], rows[1], replace(SMALL, ema=0.5), tmp_path / "ema")
    a, b = plain.state_dict(), averaged.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert load_llada(tmp_path / "ema" / MODEL_DIR).state_dict().keys() == b.keys()


@pytest.mark.parametrize(
    "change",
    [{"ema": 0.999}, {"ema": 0.99}, {"absolute_positions": False}, {"no_special_logits": False}, {"seed": 1}],
)
def test_every_training_setting_is_in_the_cache_key(change):
    assert replace(SMALL, **change).fingerprint() != SMALL.fingerprint()
    assert replace(SMALL, checkpoint_every=7).fingerprint() == SMALL.fingerprint()  # bookkeeping only


@pytest.mark.slow
def test_seeds_train_one_model_each_and_the_table_shows_mean_and_sd(darm, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = darm("latent-tokens", "--quick", "--out", out, "--cache-dir", tmp_path / "c", "--no-progress",
                             "--variants", "sidm", "--seeds", "0,1")  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["selection"]) for r in records) == [
        (0, "random order"), (0, "top-p of all"), (1, "random order"), (1, "top-p of all"),
    ]  # fmt: skip
    assert len({r["key"] for r in records}) == 4
    assert all(r["final_loss"] > 0 for r in records)
    assert stdout.count("(2 seeds)") == 2 and "train loss" in stdout and "1-step loss: latents / none" in stdout
    models = list((tmp_path / "c").glob("*/models/*"))
    assert len(models) == 2  # one training fingerprint per seed


def test_one_step_diagnostic_compares_latents_with_none(rows):
    model = new_model(SMALL, max_length=rows[0].shape[1]).eval()
    model.model.transformer.wpe.weight.data.normal_(0, 1)  # an untrained model with some structure to read
    test, prompt = rows[0][:24], rows[1]
    sidm = SIDM.one_step(model, test, prompt, 0, torch.Generator().manual_seed(0))
    assert sidm["loss"] == sidm["loss_none"]  # SIDM's target cannot read latent tokens at all
    mdm = MDM.one_step(model, test, prompt, None, torch.Generator().manual_seed(0))
    assert mdm["loss"] != mdm["loss_none"] and 0 <= mdm["accuracy"] <= 1
    scdm0 = SCDM.one_step(model, test, prompt, 0, torch.Generator().manual_seed(0))
    assert scdm0["loss"] == scdm0["loss_none"]  # n = 0 is the pass without latent tokens
    assert SCDM.one_step(model, test, prompt, None, torch.Generator().manual_seed(0)) == SCDM.one_step(
        model, test, prompt, None, torch.Generator().manual_seed(0)
    )  # reproducible
    w1 = AR_MTP.one_step(model, test, prompt, 1, torch.Generator().manual_seed(0))
    assert w1["loss"] == w1["loss_none"]
    assert AR.one_step(model, test, prompt, None, torch.Generator()) is None


def test_the_paper_preset_builds_and_trains_a_step_with_its_shapes_on_cpu(rows):
    from latent_darm.latent_tokens.settings import run_settings

    settings = run_settings(preset="paper", size=9, difficulty=30)
    train = settings.train
    assert (train.layers, train.d_model, train.heads, train.batch_size, train.ema) == (6, 512, 8, 512, 0.9999)
    assert settings.world.test_size == 1280 and train.warmup_steps == 2500
    model = new_model(train, settings.world.row_length)
    assert model.config.absolute_position_embedding
    # ~25M: LLaDA's SwiGLU MLP has three d × 4d matrices where the authors' GELU MLP (~19M in all) has two
    assert 24e6 < sum(p.numel() for p in model.parameters()) < 26e6
    world = replace(settings.world, train_size=2, test_size=1)
    batch_rows = encode_rows(world, generate_splits(world)["train"])
    batch = SCDM.batch(batch_rows, world.prompt_length, model.config.mask_token_id, torch.Generator())
    loss = batch_loss(model, batch, no_special_logits=True)
    loss.backward()
    assert torch.isfinite(loss) and model.model.transformer.wpe.weight.grad is not None


def test_ar_mtp_trains_one_model_per_swept_window_unless_shared():
    from latent_darm.latent_tokens.settings import run_settings
    from latent_darm.latent_tokens.sweep import RunSettings

    base = run_settings(quick=True)
    per_window = RunSettings(world=base.world, train=base.train, variants=("ar", "ar-mtp"), windows=(1, 4, None))
    plan = per_window.trainings(base.train)
    assert [(v, t.mtp_window) for v, t in plan] == [("ar", None), ("ar-mtp", 1), ("ar-mtp", 4), ("ar-mtp", 17)]
    assert len({t.fingerprint() for _, t in plan}) == 4  # each model its own cache entry
    assert per_window.recipe(base.train, "ar-mtp", 4).mtp_window == 4
    shared = replace(per_window, mtp_models="shared")
    assert [(v, t.mtp_window) for v, t in shared.trainings(base.train)] == [("ar", None), ("ar-mtp", None)]
    with pytest.raises(ConfigError, match="--mtp-models: 'both'"):
        replace(per_window, mtp_models="both")


def test_noise_puzzle_masks_puzzle_cells_but_never_bos_sep_or_padding():
    config = WorldConfig(task="countdown", size=3, difficulty=9, train_size=30, test_size=2)
    rows = encode_rows(config, generate_splits(config)["train"])
    prompt = config.prompt_length
    pad, mask = VOCABULARY.index("[PAD]"), VOCABULARY.index("[MASK]")
    assert (rows[:, 1 : prompt - 1] == pad).any()  # countdown puzzles are left-padded
    plain = SCDM.batch(rows, prompt, mask, torch.Generator().manual_seed(0))
    noised = SCDM.batch(rows, prompt, mask, torch.Generator().manual_seed(0), noise_puzzle=True, pad_id=pad)
    for batch in (plain, noised):
        masked = batch.input_ids == mask
        true = batch.position_ids[masked]
        assert not ((true == 0) | (true == prompt - 1)).any()
        assert not (rows.gather(1, batch.position_ids)[masked] == pad).any()
    assert not (plain.position_ids[plain.input_ids == mask] < prompt).any()
    assert (noised.position_ids[noised.input_ids == mask] < prompt).any()
    assert replace(SMALL, noise_puzzle=True).fingerprint() != SMALL.fingerprint()
