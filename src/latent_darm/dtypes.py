"""The one table of weight dtypes every command and pipeline spec uses.

Names only at import time (``darm --help`` must not load torch); ``auto`` means float32 on CPU and bfloat16 on a GPU,
the same in every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latent_darm.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Every accepted name (short aliases included) → the canonical torch name a spec stores.
DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
CANONICAL_DTYPES = ("float32", "bfloat16", "float16")
AUTO = "auto"


def canonical_dtype(name: str, field: str = "--dtype") -> str:
    """``bf16`` → ``bfloat16``; an unknown name is a one-line error naming ``field``."""
    try:
        return DTYPE_NAMES[name.lower()]
    except KeyError:
        raise ConfigError(f"{field} must be one of {', '.join(sorted(DTYPE_NAMES))}; got {name!r}") from None


def resolve_dtype_name(name: str, device: str) -> str:
    """The canonical name for ``device``: ``auto`` is bfloat16 on CUDA, float32 elsewhere."""
    if name.lower() == AUTO:
        return "bfloat16" if str(device).startswith("cuda") else "float32"
    return canonical_dtype(name)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a (non-auto) name."""
    import torch

    return getattr(torch, canonical_dtype(name))
