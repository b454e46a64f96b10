"""A planner family that exists only for tests: everything a new family writes to get its own sampler settings,
in its own module (a real one would be ``models/<family>/``). Registered by the tests that use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latent_darm.errors import ConfigError
from latent_darm.sampling import SamplerConfig


@dataclass(frozen=True)
class ToySamplerConfig(SamplerConfig):
    family: ClassVar[str] = "Toy"

    noise_schedule: str = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_schedule not in ("linear", "cosine"):
            raise ConfigError(f"noise_schedule must be 'linear' or 'cosine', got {self.noise_schedule!r}")


class ToyFamily:
    name = "Toy"
    sampler_config = ToySamplerConfig
    uses_blocks = False


FAMILY = ToyFamily()
