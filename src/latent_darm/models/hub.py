"""Resolve a model reference (local directory or Hugging Face hub id) to a local directory.

A local directory is used as it is and never touches the network. Anything else is treated as a hub id and
fetched with ``huggingface_hub`` (honouring ``HF_HUB_OFFLINE`` and the local cache), so one argument accepts
``GSAI-ML/LLaDA-8B-Instruct`` on a connected machine and ``/data/llada`` everywhere.
"""

from __future__ import annotations

from pathlib import Path

from latent_darm.errors import CheckpointError

# What a checkpoint directory needs; weights only as safetensors (no pickle).
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]


def resolve_checkpoint(reference: str | Path, what: str = "checkpoint") -> Path:
    """Return a local directory for ``reference``; a one-line :class:`CheckpointError` if there is none."""
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{what} {path} is a file; expected a checkpoint directory")
        return path
    text = str(reference)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise CheckpointError(f"{what} directory not found: {path}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, allow_patterns=CHECKPOINT_PATTERNS))
    except Exception as exc:  # network, auth and missing-repo errors all end here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{what} '{text}' is not a local directory and could not be fetched from the Hugging Face hub: {reason}"
        ) from None
