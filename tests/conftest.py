"""Session fixtures: a tiny tokenizer and tiny random checkpoints in the published layouts, built once."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Tests never reach the network: a hub look-up fails at once instead of retrying with back-off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from latent_darm.cli import common
from latent_darm.cli.app import main
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.tiny import (
    random_llada,
    random_llama,
    save_llada_checkpoint,
    tiny_llada_config,
    train_bpe_tokenizer,
)

# Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine threads mostly wait on each other.
torch.set_num_threads(1)

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "What is the value of x if 3x + 7 = 22? Let me think step by step. The answer is 5.",
    "Write brief hints that would help a student solve the problem below: the key facts and the steps.",
    "A train travels 60 miles per hour for 3 hours. How far does it go? Plan: multiply speed by time.",
    "Give only the final answer in \\boxed{}, with no explanation. Reason step by step.",
] * 20

# The benchmark files the data tests read: $LATENT_DARM_DATA, else ../shared next to the checkout.
BENCHMARKS = Path(os.environ.get("LATENT_DARM_DATA") or Path(__file__).resolve().parents[2] / "shared/data/benchmarks")
SHARED_BENCHMARKS = BENCHMARKS
BENCHMARK_FILES = ("aime24", "amc23", "gsm8k", "math", "math500", "minerva_math", "mmlu_stem", "olympiadbench")
# Mark tests that read BENCHMARKS with this: without the data they skip (reason printed) on a developer machine and
# FAIL under CI (CI=true), so a CI run can never pass by silently skipping what it is meant to test.
needs_benchmarks = pytest.mark.needs_benchmarks


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_benchmarks() -> list[str]:
    return [name for name in BENCHMARK_FILES if not (BENCHMARKS / name / "test.jsonl").is_file()]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_benchmarks: reads the benchmark files (skips without them, fails in CI)")


def pytest_report_header(config: pytest.Config) -> str:
    missing = missing_benchmarks()
    state = "found" if not missing else f"MISSING {', '.join(missing)}"
    return f"benchmark data: {BENCHMARKS} ({state}; CI={'true' if running_in_ci() else 'false'})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_benchmarks") is None:
        return
    missing = missing_benchmarks()
    if not missing:
        return
    reason = (
        f"benchmark data missing: no {missing[0]}/test.jsonl under {BENCHMARKS} "
        "(set LATENT_DARM_DATA or put the data in ../shared)"
    )
    if running_in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def llada_model(tokenizer):
    return random_llada(tiny_llada_config(tokenizer), seed=0)


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory, llada_model, tokenizer) -> Path:
    """A single-file LLaDA checkpoint directory (config.json + model.safetensors + tokenizer)."""
    return save_llada_checkpoint(tmp_path_factory.mktemp("llada") / "planner", llada_model, tokenizer)


@pytest.fixture(scope="session")
def sharded_llada_dir(tmp_path_factory, llada_model, tokenizer) -> Path:
    """The same weights sharded with ``model.safetensors.index.json``, as the 8B checkpoints ship."""
    directory = tmp_path_factory.mktemp("llada_sharded") / "planner"
    return save_llada_checkpoint(directory, llada_model, tokenizer, max_shard_bytes=60_000)


@pytest.fixture(scope="session")
def executor_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny Llama-3.2-architecture executor saved with ``save_pretrained``, weights scaled for varied outputs."""
    directory = tmp_path_factory.mktemp("executor") / "llama"
    random_llama(tokenizer, std=0.2).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def executor(executor_dir) -> AutoregressiveLM:
    return AutoregressiveLM.from_pretrained(executor_dir)


@pytest.fixture
def darm(capsys, monkeypatch) -> Callable[..., tuple[int, str, str]]:
    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["darm", *map(str, args)])
        monkeypatch.setattr(common, "DEBUG", False)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def dream_tokenizer():
    """Byte-level BPE with Dream-v0's special tokens (``<|mask|>``; ``<|endoftext|>`` = bos/eos/pad), chat template."""
    from latent_darm.models.dream.tiny import train_dream_tokenizer

    return train_dream_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def dream_model(dream_tokenizer):
    from latent_darm.models.dream.tiny import random_dream, tiny_dream_config

    return random_dream(tiny_dream_config(dream_tokenizer), seed=0, std=0.4)


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory, dream_model, dream_tokenizer) -> Path:
    """A Dream checkpoint in the official hub layout: config.json, two safetensors shards + index, tokenizer."""
    from latent_darm.models.dream.tiny import save_official_layout

    return save_official_layout(tmp_path_factory.mktemp("dream") / "Dream-v0-tiny", dream_model, dream_tokenizer)
