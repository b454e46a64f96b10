"""The demo's plateau test on projector held-out curves: the last quarter's relative drop, read from a run's
history, and the figure."""

from __future__ import annotations

import json

import pytest

from latent_darm.toy.curves import Curve, plot_curves, read_curve
from tests.evaluation.test_report import assert_png


def test_tail_drop_is_measured_over_the_last_quarter():
    falling = Curve("falling", (0, 25, 50, 75, 100), (3.0, 1.0, 0.8, 0.6, 0.5))
    assert falling.tail_drop == pytest.approx((0.6 - 0.5) / 0.6)  # from step 75 (= 75% of 100) to the end
    assert not falling.on_plateau
    flat = Curve("flat", (0, 25, 50, 75, 100), (3.0, 1.0, 0.5, 0.4, 0.397))
    assert flat.on_plateau and flat.tail_drop == pytest.approx(0.003 / 0.4)
    rising = Curve("rising", (0, 50, 100, 126), (3.0, 0.4, 0.39, 0.41))  # 75% of 126 = 94.5: from step 50
    assert rising.tail_drop < 0 and rising.on_plateau
    assert not Curve("two points", (0, 100), (3.0, 2.99)).on_plateau  # too few validations to call it flat


def test_read_curve_from_a_run_history_and_plot(tmp_path):
    run = tmp_path / "projector-x"
    (run / "projector").mkdir(parents=True)
    (run / "projector" / "config.json").write_text("{}")
    lines = [{"step": 0, "val_loss": 3.0}, {"step": 10, "train_loss": 1.0}, {"step": 20, "val_loss": 1.0}]
    lines.append({"step": 40, "val_loss": 0.9})
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    curve = read_curve("x", run / "projector")
    assert curve is not None and curve.steps == (0, 20, 40) and curve.losses == (3.0, 1.0, 0.9)
    assert read_curve("untrained", tmp_path / "nowhere") is None
    plot_curves([curve], tmp_path / "curves.png", "test")
    assert_png(tmp_path / "curves.png")
