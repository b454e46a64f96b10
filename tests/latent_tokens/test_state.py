"""Resumable training state: safetensors + JSON only (a planted pickle never runs), a truncated or foreign state
falls back to the previous good one with one notice line, and every resume ends bit-identical to an uninterrupted
run (the saved model files are compared byte for byte)."""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from pathlib import Path

import pytest

from latent_darm.latent_tokens.state import LEGACY_STATE
from latent_darm.latent_tokens.tasks import WorldConfig, encode_rows, generate_splits
from latent_darm.latent_tokens.train import HISTORY_FILE, MODEL_DIR, TrainSettings, train_variant

SRC = Path(__file__).resolve().parents[2] / "src" / "latent_darm"


class Crash(Exception):
    pass


class Payload:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.fixture(scope="module")
def rows():
    config = WorldConfig(train_size=40, test_size=2)
    return encode_rows(config, generate_splits(config)["train"]), config.prompt_length


SETTINGS = TrainSettings(layers=1, d_model=16, heads=2, steps=12, batch_size=4, warmup_steps=2, checkpoint_every=4)


def train(rows, directory: Path, settings: TrainSettings = SETTINGS, crash_at: int | None = None) -> list[str]:
    """Train ``directory``; with ``crash_at``, die after that many steps. Returns the notice lines."""
    lines: list[str] = []
    seen = [0]

    def on_step(n: int) -> None:
        seen[0] += n
        if crash_at is not None and seen[0] >= crash_at:
            raise Crash

    with contextlib.suppress(Crash):
        train_variant("scdm", rows[0], rows[1], settings, directory, on_step=on_step, log=lines.append)
    return lines


def same_model(a: Path, b: Path) -> None:
    files = sorted(p.name for p in (a / MODEL_DIR).iterdir())
    assert files == sorted(p.name for p in (b / MODEL_DIR).iterdir())
    for name in files:
        assert (a / MODEL_DIR / name).read_bytes() == (b / MODEL_DIR / name).read_bytes(), name
    history = [json.loads((d / HISTORY_FILE).read_text()) for d in (a, b)]
    assert history[0]["loss_every_50"] == history[1]["loss_every_50"]


@pytest.mark.parametrize("ema", [None, 0.9])
def test_a_killed_run_resumes_bit_identical(rows, tmp_path, ema):
    settings = TrainSettings(**{**SETTINGS.__dict__, "ema": ema})
    train(rows, tmp_path / "straight", settings)
    train(rows, tmp_path / "resumed", settings, crash_at=10)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("state-*")) == [
        "state-00000004.json", "state-00000004.safetensors", "state-00000008.json", "state-00000008.safetensors",
    ]  # fmt: skip
    assert train(rows, tmp_path / "resumed", settings) == []
    same_model(tmp_path / "straight", tmp_path / "resumed")
    assert not list((tmp_path / "resumed").glob("*state*"))  # states are dropped once the model is saved


@pytest.mark.parametrize("damage", ["truncate", "flip", "json"])
def test_a_damaged_latest_state_falls_back_to_the_previous_one(rows, tmp_path, damage):
    train(rows, tmp_path / "straight")
    train(rows, tmp_path / "resumed", crash_at=10)
    latest = tmp_path / "resumed" / "state-00000008.safetensors"
    data = latest.read_bytes()
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        latest.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        latest.with_suffix(".json").write_text('{"format": "latent-tokens-train-state/1", "step": 8, "tens')
    lines = train(rows, tmp_path / "resumed")
    assert len(lines) == 1 and "state-00000008" in lines[0] and "falling back" in lines[0], lines
    same_model(tmp_path / "straight", tmp_path / "resumed")


def test_every_state_damaged_restarts_from_scratch(rows, tmp_path):
    train(rows, tmp_path / "straight")
    train(rows, tmp_path / "resumed", crash_at=10)
    for path in (tmp_path / "resumed").glob("state-*.safetensors"):
        path.write_bytes(b"\0" * 10)
    lines = train(rows, tmp_path / "resumed")
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    same_model(tmp_path / "straight", tmp_path / "resumed")


def test_a_planted_pickle_is_never_executed(rows, tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "resumed"
    train(rows, tmp_path / "straight")
    train(rows, directory, crash_at=6)
    payload = pickle.dumps({"model": Payload(marker)})
    (directory / LEGACY_STATE).write_bytes(payload)  # the old pickled format
    (directory / "state-00000004.safetensors").write_bytes(payload)  # a pickle in place of the tensors
    record = json.loads((directory / "state-00000004.json").read_text())
    record["sha256"] = __import__("hashlib").sha256(payload).hexdigest()  # even with a matching checksum
    (directory / "state-00000004.json").write_text(json.dumps(record))
    lines = train(rows, directory)
    assert not marker.exists()
    assert any(str(directory / LEGACY_STATE) in line and "never loaded" in line for line in lines), lines
    assert any("state-00000004" in line and "not a safetensors file" in line for line in lines), lines
    same_model(tmp_path / "straight", directory)  # nothing usable: a fresh start, same weights


def test_no_pickle_loading_remains_in_the_latent_tokens_code():
    for path in [*(SRC / "latent_tokens").glob("*.py"), SRC / "cli" / "latent_tokens.py", SRC / "io.py"]:
        text = path.read_text()
        assert not re.search(r"weights_only=False|torch\.load\(|pickle\.loads?\(|import pickle", text), path
