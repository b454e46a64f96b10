"""Planner families: the one interface every diffusion planner family implements, and the registry that picks
the family from a checkpoint's ``config.json`` ``model_type``.

A family owns its network, its checkpoint reader, its special ids and its sampler; everything else in the package
(`DiffusionLM`, the pipelines, the CLI) talks to it only through :class:`PlannerFamily`. Adding a family is a
folder under ``models/`` with a ``family.py`` that defines ``FAMILY``, plus one line in :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.io import read_json_file
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds

# config.json model_type → module holding that family's FAMILY object (imported only when used).
FAMILIES: dict[str, str] = {
    "llada": "latent_darm.models.llada.family",
    "Dream": "latent_darm.models.dream.family",
    "diffusion_gemma": "latent_darm.models.diffusion_gemma.family",
}


@dataclass
class PlannerForward:
    """``logits`` [B, T, V] where row i scores position i (any shift already undone); ``hidden`` [B, T, d] the
    final-norm hidden states when asked (rows at their own positions, unshifted)."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class PlannerFamily(Protocol):
    """What a diffusion planner family provides. ``remasking`` lists its position-choice rules, default first;
    ``uses_blocks`` says whether ``block_length`` means anything to its sampler."""

    name: str
    remasking: tuple[str, ...]
    uses_blocks: bool

    def load(self, directory: Path, *, dtype: torch.dtype, device: str | torch.device, strict_config: bool) -> Any:
        """The network from a checkpoint directory in the family's published layout."""
        ...

    def save(self, model: Any, directory: Path) -> None: ...

    def special_ids(self, model: Any, tokenizer: PreTrainedTokenizerBase, mask_token_id: int | None) -> SpecialIds:
        """Mask / EOS / end-of-turn ids, checked against the tokenizer (one-line errors)."""
        ...

    def hidden_size(self, model: Any) -> int: ...

    def num_layers(self, model: Any) -> int: ...

    def forward(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ) -> PlannerForward: ...

    def check(self, config: SamplerConfig) -> None:
        """Refuse sampler settings this family cannot honour, naming the field."""
        ...

    def sample(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: SamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput: ...


def get_family(model_type: str | None, source: str = "config.json") -> PlannerFamily:
    """The family registered for ``model_type``; a one-line error listing the supported ones otherwise."""
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not a supported planner family; supported: {', '.join(FAMILIES)}"
        )
    try:
        return importlib.import_module(FAMILIES[model_type]).FAMILY
    except ImportError as exc:  # e.g. DiffusionGemma on a transformers release without diffusion_gemma
        import transformers

        raise CheckpointError(
            f"{source}: the {model_type!r} planner family needs a newer transformers than {transformers.__version__} "
            f"({exc}); upgrade transformers"
        ) from None


def read_model_type(directory: Path) -> str | None:
    raw = read_json_file(directory / "config.json", CheckpointError)  # not UTF-8, malformed, huge or deep: one line
    return raw.get("model_type") if isinstance(raw, dict) else None


def family_of_directory(directory: Path) -> PlannerFamily:
    return get_family(read_model_type(directory), str(directory / "config.json"))


def local_family(reference: str | Path) -> PlannerFamily | None:
    """The family of a local checkpoint directory; ``None`` for a hub id (known only once downloaded)."""
    directory = Path(reference).expanduser()
    return family_of_directory(directory) if (directory / "config.json").is_file() else None


def family_of_model(model: nn.Module) -> PlannerFamily:
    """The family of an already-built network, from its config's ``model_type``."""
    return get_family(getattr(model.config, "model_type", None), type(model).__name__)


def sampler_config(family: PlannerFamily, **options: Any) -> SamplerConfig:
    """A :class:`SamplerConfig` for ``family``: unset (``None``) options take the family's defaults; ``remasking``
    and ``block_length`` are checked against what the family knows."""
    values = {k: v for k, v in options.items() if v is not None}
    rule = values.setdefault("remasking", family.remasking[0])
    if rule not in family.remasking:
        raise ConfigError(f"remasking {rule!r} is not known to {family.name}; valid: {', '.join(family.remasking)}")
    if not family.uses_blocks:
        if "block_length" in values:
            raise ConfigError(f"block_length is not used by {family.name} (it denoises the whole canvas at once)")
        values["block_length"] = values.get("gen_length", SamplerConfig.__dataclass_fields__["gen_length"].default)
    config = SamplerConfig(**values)
    family.check(config)
    return config


def refuse_incomplete_load(directory: Path, info: dict[str, Any]) -> None:
    """A transformers ``output_loading_info`` report with any missing, unexpected or mis-shaped tensor is a one-line
    error naming the first one: a model must never run with randomly initialised weights."""
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(n) for n in info.get(kind, ()))
        if names:
            what = kind.replace("_keys", "")
            raise CheckpointError(f"{directory}: {what} tensor '{names[0]}' ({len(names)} {what} in all)")


def from_pretrained_strictly(model_class: Any, directory: Path, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(directory, **kwargs)`` without transformers' log lines and progress bars,
    refused (one line) when it fails or when any tensor is missing, unexpected or mis-shaped."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = model_class.from_pretrained(directory, output_loading_info=True, **kwargs)
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory}: {str(exc).splitlines()[0]}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.utils.logging.enable_progress_bar()
    refuse_incomplete_load(directory, info)
    return model
