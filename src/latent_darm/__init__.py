"""latent-darm: a discrete diffusion planner and an autoregressive executor, talking in text or latent space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["LatentDARM", "__version__"]

if TYPE_CHECKING:
    from latent_darm.api import LatentDARM


def __getattr__(name: str) -> Any:
    # Lazy: ``import latent_darm`` (and every ``darm`` command) stays light; torch/transformers load on first use.
    if name == "LatentDARM":
        from latent_darm.api import LatentDARM

        return LatentDARM
    raise AttributeError(f"module 'latent_darm' has no attribute {name!r}")
