"""Optional dependencies: a command that needs a package of an extra says which extra to install, in one line."""

from __future__ import annotations

import importlib
from types import ModuleType

from latent_darm.errors import DarmError

# Import name → the extra of ``pyproject.toml`` that installs it.
EXTRAS = {"peft": "train", "datasets": "eval", "matplotlib": "plot", "gguf": "gguf"}


class MissingExtraError(DarmError):
    """A command needs a package of an optional extra that is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a package of an extra, or one of its submodules) or fail naming the extra to install."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the package is there but broken: its own error is the useful one
        extra = EXTRAS[top]
        raise MissingExtraError(
            f"{purpose} needs {top}, which is not installed: pip install 'latent-darm[{extra}]'"
        ) from None
