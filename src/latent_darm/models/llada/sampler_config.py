"""LLaDA's sampler settings (names as in ML-GSAI/LLaDA ``generate.py``) plus the opt-in fast modes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from latent_darm.errors import ConfigError
from latent_darm.sampling import SamplerConfig

REMASKING = ("low_confidence", "random")
CACHE_MODES = ("none", "prefix", "dual")
LOOKAHEAD_CHOICES = ("nearest", "random")


@dataclass(frozen=True)
class LLaDASamplerConfig(SamplerConfig):
    """Exact mode is ``threshold=None, cache="none", early_stop=False, lookahead=None``: token-for-token the
    reference sampler. ``denoise_fraction`` < 1 stops after that share of the steps (later positions stay masked),
    for the paper's "latents after P% of denoising" ablation.

    ``confidence_eos_eot_inf`` drops EoT from the confidence at every temperature and EOS only at temperature 0,
    as the reference does (at temperature > 0 it writes EOS's -inf into noisy logits it no longer reads);
    ``confidence_eos_every_temperature`` drops EOS at every temperature too (a deviation, opt-in).

    ``lookahead`` (He et al.'s knob; ``None`` = all, the reference token for token): each forward pass holds the
    prompt, the decoded tokens, the positions being decoded (the current block and any earlier position still
    masked) and only this many further masked positions after the block, each at its true position id; the other
    masked positions are not computed. ``lookahead_choice`` picks which: the ``nearest`` ones (the canvas simply
    ends n positions after the block; works with a KV cache) or ``random`` ones drawn uniformly each step from the
    generator (the paper's rule; not with a cache, which keeps the whole canvas). When fewer masked positions remain
    after the block, all of them are held.
    """

    family: ClassVar[str] = "LLaDA"

    block_length: int = 32
    temperature: float = 0.0
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    confidence_eos_every_temperature: bool = False
    threshold: float | None = None
    cache: Literal["none", "prefix", "dual"] = "none"
    early_stop: bool = False
    lookahead: int | None = None
    lookahead_choice: Literal["nearest", "random"] = "nearest"
    denoise_fraction: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.block_length, bool) or not isinstance(self.block_length, int) or self.block_length <= 0:
            raise ConfigError(f"block_length must be a positive integer, got {self.block_length!r}")
        if self.gen_length % self.block_length:
            raise ConfigError(f"gen_length {self.gen_length} is not divisible by block_length {self.block_length}")
        if self.steps % self.num_blocks:
            raise ConfigError(
                f"steps {self.steps} is not divisible by the number of blocks {self.num_blocks} "
                f"(gen_length {self.gen_length} / block_length {self.block_length})"
            )
        self.check_steps_fit()
        for name in ("temperature", "cfg_scale"):
            # nan passes every comparison below and inf turns the sampling noise into nan: both are refused here.
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0, got {self.temperature}")
        self.check_choice("remasking", REMASKING)
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be ≥ 0, got {self.cfg_scale}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"cache must be 'none', 'prefix' or 'dual', got {self.cache!r}")
        self._check_lookahead()
        if not 0.0 < self.denoise_fraction <= 1.0:
            raise ConfigError(f"denoise_fraction must be in (0, 1], got {self.denoise_fraction}")

    def _check_lookahead(self) -> None:
        if self.lookahead_choice not in LOOKAHEAD_CHOICES:
            raise ConfigError(f"lookahead_choice must be 'nearest' or 'random', got {self.lookahead_choice!r}")
        if self.lookahead is None:
            return
        if isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int):
            raise ConfigError(f"lookahead must be an integer or 'all', got {self.lookahead!r}")
        if self.lookahead < 0:
            raise ConfigError(f"lookahead must be ≥ 0, got {self.lookahead}")
        if self.lookahead_choice == "random" and self.cache != "none":
            raise ConfigError(f"lookahead_choice 'random' needs cache 'none' (a {self.cache!r} cache keeps the canvas)")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def is_exact(self) -> bool:
        """True when the reference algorithm runs unchanged."""
        return self.threshold is None and self.cache == "none" and not self.early_stop and self.lookahead is None

    @property
    def step_budget(self) -> int:
        """Denoising steps to run before stopping (all of them unless ``denoise_fraction`` < 1)."""
        return max(1, round(self.denoise_fraction * self.steps))


def parse_lookahead(value: str | int | None, option: str = "--lookahead") -> int | None:
    """``--lookahead``: a count, or ``all`` (also ``None``) for every masked position (exact mode)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        raise ConfigError(f"{option} must be a non-negative integer or 'all', got {value!r}")
    return int(text)
