"""What every planner family's sampler shares: the special ids it is given, the output it returns, and the base of
its settings. Each family's own sampler and settings live beside its model (``models/<family>/sampler.py``); this
module imports no family.

A family's settings are a dataclass deriving from :class:`SamplerConfig` with only the fields that family means
something by. Construction refuses any other field with one line naming it and the family, so a setting can never
be passed to a family that would ignore it, and no family keeps a list of the settings it does not have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from latent_darm.errors import ConfigError


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the sampler treats specially."""

    mask: int
    eos: int
    eot: int | None = None


@dataclass
class SampleOutput:
    """``sequences`` [B, P+G]: the (left-padded) prompts then the generated tokens; ``hidden`` [B, G, d] the plan
    latents (for each generated position, from the last forward pass that computed it: see each family's sampler
    for which canvas that pass saw); ``nfe`` network evaluations of the batch (a CFG step counts two); ``row_nfe``
    [B] evaluations that computed the row while it had a masked position to decode (a row waiting for slower rows
    of its batch is not counted)."""

    sequences: torch.Tensor
    prompt_length: int
    nfe: int
    row_nfe: torch.Tensor
    hidden: torch.Tensor | None = None

    @property
    def generated(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]


@dataclass(frozen=True)
class SamplerConfig:
    """The settings every family means the same way: ``gen_length`` positions to fill, in ``steps`` denoising
    steps, and ``hidden_layer``, the layer whose hidden states are the plan latents (None: none kept; -1: after the
    final norm; k: the output of the first k blocks). Families derive from it and name themselves in ``family``."""

    family: ClassVar[str] = "no"

    gen_length: int = 64
    steps: int = 64
    hidden_layer: int | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> SamplerConfig:
        """Refuse, by name, a setting this family does not have (also through ``dataclasses.replace``)."""
        known = field_names(cls)
        for name in kwargs:
            if name not in known:
                raise ConfigError(f"{name} is not a {cls.family} sampler setting")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for name in ("gen_length", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def check_steps_fit(self) -> None:
        """Each step reveals at least one token when there are as many steps as tokens; more would run passes that
        reveal nothing (and that the per-row count of passes would not report)."""
        if self.steps > self.gen_length:
            raise ConfigError(f"steps {self.steps} exceeds gen_length {self.gen_length} (at most one step per token)")

    def check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ConfigError(f"{name} {value!r} is not known to {self.family}; valid: {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def field_names(config: type[SamplerConfig] | SamplerConfig) -> frozenset[str]:
    """The settings a family's config class has."""
    return frozenset(f.name for f in fields(config))
