"""Resumable training state without pickle: tensors in safetensors, plain values in JSON.

The cache holding a half-trained model is often shared, so nothing read back from it may run code: ``torch.load``
of a pickle would. A checkpoint at step s is the pair ``state-<s>.safetensors`` (model, optimizer moments, EMA,
RNG states as uint8 tensors) and ``state-<s>.json`` (step, losses, optimizer/scheduler settings, and the sha256 of
the tensor file). Both are written to a temp file and renamed, the JSON last, so a kill mid-write leaves the
previous pair whole; the last :data:`KEEP` pairs are kept, so a pair that later turns out truncated or corrupt
falls back to the one before it (or to a fresh start), with a one-line notice naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latent_darm.errors import DarmError
from latent_darm.io import atomic_write_json, read_json_file

STATE_FORMAT = "latent-tokens-train-state/1"
LEGACY_STATE = "state.pt"  # the pickled state of earlier versions: never loaded
KEEP = 2
_NAME = re.compile(r"state-(\d{8})\.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pairs(directory: Path) -> list[tuple[int, Path]]:
    """(step, JSON path) of the checkpoints in ``directory``, newest first."""
    found = [(int(m.group(1)), p) for p in directory.glob("state-*.json") if (m := _NAME.fullmatch(p.name))]
    return sorted(found, reverse=True)


def save_state(directory: Path, step: int, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Write checkpoint ``step`` (tensors, then the JSON that vouches for them) and prune older ones."""
    name = f"state-{step:08d}"
    tensor_path = directory / f"{name}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, tmp)
        os.replace(tmp, tensor_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    record = {"format": STATE_FORMAT, "step": step, "tensors": tensor_path.name, "sha256": _sha256(tensor_path)}
    atomic_write_json(directory / f"{name}.json", {**record, "values": values})
    for _, old in _pairs(directory)[KEEP:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)


def _read_pair(json_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and values of one checkpoint; ValueError (a one-line reason) when it is not one."""
    try:
        record = read_json_file(json_path)
    except DarmError as exc:
        raise ValueError(str(exc).removeprefix(f"{json_path}: ")) from None
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise ValueError(f"not a {STATE_FORMAT} file")
    tensor_path = json_path.with_suffix(".safetensors")
    if record.get("tensors") != tensor_path.name or not isinstance(record.get("values"), dict):
        raise ValueError("fields 'tensors' or 'values' are wrong")
    if not tensor_path.is_file():
        raise ValueError(f"{tensor_path.name} is missing")
    if _sha256(tensor_path) != record.get("sha256"):
        raise ValueError(f"{tensor_path.name} is truncated or changed (sha256 differs)")
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{tensor_path.name} is not a safetensors file ({str(exc).splitlines()[0]})") from None
    return tensors, {**record["values"], "step": record.get("step")}


def saved_states(
    directory: Path, notice: Callable[[str], None]
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Readable checkpoints, newest first; every file skipped (a pickled ``state.pt``, a truncated or foreign pair)
    gets one ``notice`` line naming it. The caller stops at the first it can restore."""
    legacy = directory / LEGACY_STATE
    if legacy.exists():
        notice(f"ignoring {legacy}: pickled training states are never loaded (loading one can run code)")
    for _, json_path in _pairs(directory):
        try:
            yield _read_pair(json_path)
        except ValueError as exc:
            notice(f"ignoring training state {json_path}: {exc}; falling back to an earlier state")


def clear_states(directory: Path) -> None:
    """Remove every checkpoint once the model is saved (the finished model supersedes them)."""
    for _, json_path in _pairs(directory):
        json_path.unlink(missing_ok=True)
        json_path.with_suffix(".safetensors").unlink(missing_ok=True)
    (directory / LEGACY_STATE).unlink(missing_ok=True)
    for stray in directory.glob(".state-*.tmp"):
        stray.unlink(missing_ok=True)
