"""Planner families: the one interface every diffusion planner family implements, and the registry that picks
the family from a checkpoint's ``config.json`` ``model_type``.

A family owns its network, its checkpoint reader, its special ids, its sampler and the sampler's settings (a
:class:`~latent_darm.sampling.SamplerConfig` with only the fields it has); everything else in the package
(`DiffusionLM`, the pipelines, the CLI) talks to it only through :class:`PlannerFamily` and builds its settings
through :func:`sampler_config`. Adding a family is a folder under ``models/`` with a ``family.py`` that defines
``FAMILY``, plus one line in :data:`FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Union

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.io import read_json_file
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds, field_names

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
    """What a diffusion planner family provides. ``sampler_config`` is its settings' class (construction refuses a
    field it does not have); ``uses_blocks`` says whether ``block_length`` means anything to its sampler."""

    name: str
    sampler_config: type[SamplerConfig]
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


def sampler_config(family: PlannerFamily | None, **options: Any) -> SamplerConfig:
    """``family``'s sampler settings; unset (``None``) options take its defaults, and an option it does not have is
    a one-line error naming both. Without a family (a hub planner not downloaded yet), the settings of the first
    registered family they are valid for, read as a stored spec is (:func:`settings_for`)."""
    values = {k: v for k, v in options.items() if v is not None}
    if family is not None:
        return family.sampler_config(**values)
    families = loadable_families()
    if "block_length" in values:  # named for every family, it must still be one a family with blocks could use
        blocks = {k: values[k] for k in ("gen_length", "steps", "block_length") if k in values}
        for candidate in families:
            if candidate.uses_blocks:
                candidate.sampler_config(**blocks)
    refusals: list[tuple[PlannerFamily, ConfigError]] = []
    for candidate in families:
        try:
            return candidate.sampler_config(**settings_for(candidate, values))
        except ConfigError as exc:
            refusals.append((candidate, exc))
    # The refusal worth reading is that of a family which has every setting given.
    fitting = [exc for f, exc in refusals if set(values) <= field_names(f.sampler_config) | {"block_length"}]
    raise (fitting or [exc for _, exc in refusals])[0]


def loadable_families() -> list[PlannerFamily]:
    """The registered families this transformers release can load, in registry order."""
    families = []
    for model_type in FAMILIES:
        try:
            families.append(get_family(model_type))
        except CheckpointError:  # e.g. DiffusionGemma on an older transformers
            continue
    return families


def setting_types() -> dict[str, tuple[type, ...]]:
    """Every sampler setting some loadable family has (registry order, then each config's field order), with the
    plain JSON types its value may take in any family that has it (a ``Literal`` gives its values' types; ``None``,
    when allowed, last). What a stored spec may hold is derived from this, so a family's new setting needs no edit
    outside the family's folder."""
    return dict(_setting_types(tuple(FAMILIES.items())))


@functools.cache
def _setting_types(registry: tuple[tuple[str, str], ...]) -> tuple[tuple[str, tuple[type, ...]], ...]:
    del registry  # the cache key: a family registered later (a test's) is seen
    found: dict[str, list[type]] = {}
    for family in loadable_families():
        config = family.sampler_config
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            kinds = found.setdefault(f.name, [])
            kinds.extend(k for k in _json_types(hints[f.name]) if k not in kinds)
    return tuple((name, tuple(sorted(kinds, key=lambda k: k is type(None)))) for name, kinds in found.items())


def _json_types(hint: Any) -> list[type]:
    if typing.get_origin(hint) is Literal:
        return list(dict.fromkeys(type(value) for value in typing.get_args(hint)))
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [kind for option in typing.get_args(hint) for kind in _json_types(option)]
    return [typing.get_origin(hint) or hint]


UNUSED_SETTING = {
    "temperature": 0.0,
    "cfg_scale": 0.0,
    "logits_eos_inf": False,
    "confidence_eos_eot_inf": False,
    "confidence_eos_every_temperature": False,
    "threshold": None,
    "cache": "none",
    "early_stop": False,
    "lookahead": None,
    "lookahead_choice": "nearest",
    "denoise_fraction": 1.0,
    "top_p": None,
    "top_k": None,
    "alg_temp": None,
    "latent_rows": "plan",
}
"""What the single ``SamplerConfig`` of every family (before each had its own, as at fa60b19) stored for a setting a
family did not use (a family without blocks was given any ``block_length`` and ignored it): reading a stored file,
such a value is dropped for a family without the setting, any other refused.

A table of that config's defaults, not one derived from today's families, on purpose: it records what old files
hold. Derived from today's defaults, it would change when a family's default does (and old files holding the old
default would no longer load), and it would take a new family's setting at its default for "unused", so that
settings given for one family were silently ignored by another (``tests/models/test_sampler_settings.py``). A
family added later needs no entry: of these, specs written today hold only ``cache`` (named in every diffusion role,
``"none"`` by default) for a family that may lack it, and this entry covers it."""


def renamed_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Stored settings under today's names: He et al.'s knob was ``latent_tokens`` (with ``latent_choice``) beside a
    ``lookahead`` that cut the canvas, the nearest-positions case of the same idea; both are ``lookahead`` now."""
    values = dict(values)
    if "latent_tokens" not in values and "latent_choice" not in values:
        return values
    held, choice = values.pop("latent_tokens", None), values.pop("latent_choice", None) or "nearest"
    if held is None:
        return values
    cut = values.get("lookahead")
    if cut is not None and choice != "nearest":
        raise ConfigError(
            f"latent_tokens {held} drawn at random within lookahead {cut} is no longer a setting; use one of them"
        )
    values["lookahead"] = held if cut is None else min(held, cut)
    if choice != "nearest":  # nearest, the default, is not stored
        values["lookahead_choice"] = choice
    return values


def settings_for(family: PlannerFamily, values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as a spec or a projector stores them, read for ``family``: old names mapped
    (:func:`renamed_settings`), and a setting the family lacks dropped where it holds the value that meant "unused"
    (:data:`UNUSED_SETTING`; a role names ``block_length`` and ``cache`` for every family). Any other setting the
    family lacks is kept, for construction to refuse."""
    own = field_names(family.sampler_config)
    return {
        key: value
        for key, value in renamed_settings(values).items()
        if key in own
        or not (key == "block_length" or (key in UNUSED_SETTING and value == UNUSED_SETTING[key]) or value is None)
    }


def current_sampler_dict(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A sampler's ``to_dict()`` as a results directory stored it before each family had its own settings (every
    family's fields, ``latent_tokens`` among them), as today's code writes it: the family its ``remasking`` rule
    names, its own settings. Anything else, or settings that no longer build, comes back unchanged."""
    if "latent_tokens" not in stored and "latent_choice" not in stored:
        return dict(stored)
    for model_type in FAMILIES:
        try:
            family = get_family(model_type)
            return family.sampler_config(**settings_for(family, stored)).to_dict()  # its remasking picks it
        except (CheckpointError, ConfigError):
            continue
    return dict(stored)


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
