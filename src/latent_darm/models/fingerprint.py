"""A cheap fingerprint of a checkpoint's weights, so a results directory can tell which weights produced it.

Hashing every byte of an 8B checkpoint takes minutes; this reads a few hundred KiB per file instead: for every
weight file (``*.safetensors``, ``*.gguf``, and the safetensors index) its size, its header (for safetensors: the
tensor names, dtypes, shapes and offsets) and sixteen 4 KiB samples spread evenly over the tensor data. Two
checkpoints of one architecture share headers and sizes, but a retrained or fine-tuned model differs in nearly
every weight, so the samples tell them apart. ``config.json`` is hashed too (a changed layer count is a different
model). A hub id is fingerprinted through its cached snapshot.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from latent_darm.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
EXTRA_FILES = ("config.json", "model.safetensors.index.json")
SAMPLES = 16
SAMPLE_BYTES = 4096
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def _file_digest(path: Path, name: str, digest: hashlib._Hash) -> None:
    size = path.stat().st_size
    digest.update(f"{name}\0{size}\0".encode())
    with path.open("rb") as handle:
        start = 0
        if path.suffix == ".safetensors" and size >= 8:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            start = 8 + min(header_len, MAX_HEADER_BYTES, size - 8)
            handle.seek(0)
            digest.update(handle.read(start))
        span = size - start
        for i in range(SAMPLES if span > 0 else 0):
            handle.seek(start + (span * i) // SAMPLES)
            digest.update(handle.read(SAMPLE_BYTES))


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
