"""Loss curves (issue 22, item 1): the held-out loss is recorded without changing the training by a bit, it is
the loss of the evaluated (EMA) weights, the plateau rule reads the tail of the curve, and a run writes
``loss_curves.png`` and ``loss_curves.md``."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from latent_darm.latent_tokens.curves import (
    CURVES_FIGURE,
    CURVES_TABLE,
    heldout_drop,
    heldout_every,
    heldout_loss,
    is_flat,
    tail_drop,
    tail_drop_se,
    trend,
)
from latent_darm.latent_tokens.tasks import WorldConfig, encode_rows, generate_splits
from latent_darm.latent_tokens.train import HISTORY_FILE, MODEL_DIR, TrainSettings, train_variant

SMALL = TrainSettings(layers=1, d_model=16, heads=2, steps=50, batch_size=4, warmup_steps=2, checkpoint_every=20,
                      ema=0.9)  # fmt: skip


@pytest.fixture(scope="module")
def world():
    config = WorldConfig(train_size=40, test_size=8)
    splits = generate_splits(config)
    return encode_rows(config, splits["train"]), encode_rows(config, splits["test"]), config.prompt_length


def test_tail_drop_compares_the_last_two_tenths():
    assert tail_drop([1.0] * 20) == 0.0
    falling = [1.0] * 16 + [1.1, 1.1, 1.0, 1.0]  # [80%, 90%) mean 1.1, [90%, 100%] mean 1.0
    assert tail_drop(falling) == pytest.approx(0.1)
    assert tail_drop([1.0] * 9) is None
    assert tail_drop_se([1.0] * 20) == 0.0 and tail_drop_se([1.0] * 16 + [0.9, 1.1, 1.0, 1.0]) > 0
    assert is_flat(0.1, 1.0) is False and is_flat(0.01, 1.0) is True and is_flat(None, 1.0) is None
    assert is_flat(1.0, 5e-5) is True  # a 100% drop of 5e-5 nats: at zero already
    assert [trend(d, 1.0) for d in (0.1, 0.01, -0.01, -0.1, None)] == ["falling", "flat", "flat", "rising", None]
    assert is_flat(-0.1, 1.0) is True  # a rising (overfitting) held-out loss no longer falls
    points = [(s, 2.0 - s / 100) for s in range(4, 101, 4)]  # falling by 0.04 per point
    assert heldout_drop(points, 100) == pytest.approx((1.16 - 1.04) / 1.04)  # 80, 84, 88 against 92, 96, 100
    assert heldout_drop(points[:10], 100) is None


@pytest.mark.parametrize("variant", ["scdm", "ar-mtp"])
def test_the_heldout_curve_leaves_training_bit_identical_and_scores_the_ema_weights(world, tmp_path, variant):
    train_rows, test_rows, prompt = world
    settings = replace(SMALL, mtp_window=4 if variant == "ar-mtp" else None)
    plain = train_variant(variant, train_rows, prompt, settings, tmp_path / "plain")
    with_curve = train_variant(variant, train_rows, prompt, settings, tmp_path / "curve", heldout=test_rows)
    for name in sorted(p.name for p in (tmp_path / "plain" / MODEL_DIR).iterdir()):
        assert (tmp_path / "plain" / MODEL_DIR / name).read_bytes() == (
            tmp_path / "curve" / MODEL_DIR / name
        ).read_bytes()
    a, b = (json.loads((tmp_path / d / HISTORY_FILE).read_text()) for d in ("plain", "curve"))
    assert a["loss_every_50"] == b["loss_every_50"] and a["heldout_loss"] == []
    steps = [s for s, _ in b["heldout_loss"]]
    every = heldout_every(settings.steps)
    assert steps == list(range(every, settings.steps + 1, every))
    # the last point is the saved (EMA) model's loss on the held-out rows
    again = heldout_loss(with_curve.float(), variant, test_rows, prompt, batch_size=settings.batch_size,
                         window=settings.mtp_window, noise_puzzle=False, no_special_logits=True)  # fmt: skip
    assert b["heldout_loss"][-1][1] == pytest.approx(again, rel=1e-5)
    assert torch.equal(next(plain.parameters()), next(with_curve.parameters()))


def test_a_resumed_run_keeps_its_heldout_curve(world, tmp_path):
    train_rows, test_rows, prompt = world

    class Crash(Exception):
        pass

    def crash(n: int, seen=[0]) -> None:  # noqa: B006 — a counter across calls
        seen[0] += n
        if seen[0] >= 30:
            raise Crash

    with pytest.raises(Crash):
        train_variant("sidm", train_rows, prompt, SMALL, tmp_path / "killed", heldout=test_rows, on_step=crash)
    train_variant("sidm", train_rows, prompt, SMALL, tmp_path / "killed", heldout=test_rows)
    train_variant("sidm", train_rows, prompt, SMALL, tmp_path / "whole", heldout=test_rows)
    a, b = (json.loads((tmp_path / d / HISTORY_FILE).read_text()) for d in ("killed", "whole"))
    assert a["heldout_loss"] == b["heldout_loss"]


@pytest.mark.slow
def test_a_run_writes_the_curve_table_and_figure(darm, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = darm("latent-tokens", "--quick", "--out", out, "--cache-dir", tmp_path / "cache",
                             "--no-progress", "--variants", "mdm,ar-mtp", "--windows", "2")  # fmt: skip
    assert code == 0, err
    assert (out / CURVES_FIGURE).stat().st_size > 0
    table = (out / CURVES_TABLE).read_text()
    assert "| mdm | 0 | 8 |" in table and "| ar-mtp w=2 | 0 | 8 |" in table
    assert table.count("(held-out) |") == 2  # 8 steps: 8 held-out points, judged on them
    assert "| mdm | 0 | 8 |" in stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(isinstance(r["curve"]["heldout_loss"], float) for r in records)
