"""A cheap fingerprint of a checkpoint's weights, so a results directory can tell which weights produced it.

Hashing every byte of an 8B checkpoint takes minutes; this reads a few hundred KiB per file instead. For every
weight file (``*.safetensors``, ``*.gguf``, at any depth) it hashes the file's size, for safetensors its header (the
tensor names, dtypes, shapes and offsets) and 64 bytes at four places inside *every tensor*, and for any file
sixteen 4 KiB samples spread evenly over it. Two checkpoints of one architecture share headers and sizes, but
training or fine-tuning changes every element of the tensors it touches, so the per-tensor samples tell them apart.
``config.json`` and the shard index are hashed too (a changed layer count is a different model). A hub id is
fingerprinted through its cached snapshot.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from latent_darm.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
EXTRA_FILES = ("config.json", "model.safetensors.index.json")
SAMPLES, SAMPLE_BYTES = 16, 4096  # spread over the whole file
TENSOR_SAMPLES, TENSOR_SAMPLE_BYTES = 4, 64  # inside every safetensors tensor
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _tensor_spans(header: bytes) -> list[tuple[int, int]]:
    """(begin, end) data offsets of every tensor in a safetensors header; [] if it cannot be read."""
    try:
        entries = json.loads(header)
    except (ValueError, RecursionError):
        return []
    spans = []
    for name in sorted(entries) if isinstance(entries, dict) else []:
        offsets: Any = entries[name].get("data_offsets") if isinstance(entries[name], dict) else None
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            spans.append((offsets[0], offsets[1]))
    return spans


def _file_digest(path: Path, name: str, digest: Any) -> None:
    size = path.stat().st_size
    digest.update(f"{name}\0{size}\0".encode())
    with path.open("rb") as handle:
        start = 0
        if path.suffix == ".safetensors" and size >= 8:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            start = 8 + min(header_len, MAX_HEADER_BYTES, size - 8)
            header = _read_at(handle, 8, start - 8)
            digest.update(header)
            for begin, end in _tensor_spans(header):
                for i in range(TENSOR_SAMPLES):
                    offset = begin + max(end - begin - TENSOR_SAMPLE_BYTES, 0) * i // (TENSOR_SAMPLES - 1)
                    digest.update(_read_at(handle, start + offset, min(TENSOR_SAMPLE_BYTES, end - begin)))
        span = size - start
        for i in range(SAMPLES if span > 0 else 0):
            digest.update(_read_at(handle, start + span * i // SAMPLES, SAMPLE_BYTES))


def weights_fingerprint(path: str | Path) -> str:
    """16 hex digits identifying the weights under ``path`` (a checkpoint directory or one weight file)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.is_file():
            files = [path]
            root = path.parent
        else:
            root = path
            # Weight files at any depth (a projector keeps its LoRA adapter in adapter/), in a stable order.
            weights = sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
            files = [path / name for name in EXTRA_FILES if (path / name).is_file()] + weights
        for file in files:
            _file_digest(file, file.relative_to(root).as_posix(), digest)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weights to fingerprint them ({exc.strerror or exc})") from None
    return digest.hexdigest()[:16]


def reference_fingerprint(reference: str | Path) -> str | None:
    """The fingerprint of a model reference: a local path now; a hub id through its cached snapshot, without
    touching the network (None when it is not cached yet, or when the reference names nothing: the loader reports
    that)."""
    path = Path(reference).expanduser()
    if path.exists():
        return weights_fingerprint(path)
    text = str(reference)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        from latent_darm.models.hub import CHECKPOINT_PATTERNS

        cached = snapshot_download(repo_id=text, allow_patterns=CHECKPOINT_PATTERNS, local_files_only=True)
    except Exception:  # not in the cache (or no hub library): nothing to compare yet
        return None
    return weights_fingerprint(cached)
