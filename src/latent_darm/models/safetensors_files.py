"""Checked access to a checkpoint's safetensors files: the shard index and each file's header.

Planner and executor loading both go through here before any tensor is read, so a truncated or corrupt file, or
an index whose ``weight_map`` is not a mapping of tensor names to shard files in the directory, is one
:class:`CheckpointError` line naming the file, never a traceback from the Rust reader or from transformers.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from latent_darm.errors import CheckpointError
from latent_darm.io import read_json_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def tensor_names(path: Path) -> set[str]:
    """Names of the tensors in one safetensors file; opening checks the header and that the data covers it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return set(handle.keys())
    except (SafetensorError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable safetensors file, corrupt or truncated ({reason})") from None


def read_weight_map(directory: Path) -> dict[str, Path]:
    """The index's ``weight_map`` as {tensor name: shard path}, every entry checked (not yet the shards' contents)."""
    index_path = directory / INDEX_FILE
    index = read_json_file(index_path, CheckpointError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: not a valid safetensors index (no 'weight_map' of tensor → shard)")
    files: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.endswith(".safetensors") or Path(shard).name != shard:
            raise CheckpointError(
                f"{index_path}: weight_map entry '{name}' → {shard!r} is not a .safetensors file name in the directory"
            )
        files[name] = directory / shard
    for shard in sorted(set(files.values())):
        if not shard.is_file():
            raise CheckpointError(f"{index_path}: shard {shard.name} is listed but missing")
    return files


def checked_weight_files(directory: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file that holds it, after opening every file: a corrupt shard,
    or an index naming a tensor its shard does not hold, is a CheckpointError."""
    if (directory / INDEX_FILE).exists():
        files = read_weight_map(directory)
        held = {shard: tensor_names(shard) for shard in sorted(set(files.values()))}
        for name, shard in files.items():
            if name not in held[shard]:
                raise CheckpointError(f"{directory / INDEX_FILE}: tensor '{name}' is listed in {shard.name}, not in it")
        return files
    single = directory / SINGLE_FILE
    if single.exists():
        return {name: single for name in tensor_names(single)}
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in directory.glob(pattern))
    if pickles:
        raise CheckpointError(pickle_only_message(directory, pickles[0]))
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}")


def pickle_only_message(directory: Path, name: str) -> str:
    return (
        f"{directory}: only pickle weights found ({name}); pickle files can run code when loaded and are not read: "
        "convert them to safetensors (load the model once, then save_pretrained(dir, safe_serialization=True))"
    )
