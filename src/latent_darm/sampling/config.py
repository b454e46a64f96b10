"""Settings of the diffusion sampler, checked once, up front, with errors that name the field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from latent_darm.errors import ConfigError

Remasking = Literal["low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "entropy_bound"]
# Every family's position-choice rules; each planner family accepts its own subset (models/<family>/family.py).
REMASKING_RULES = ("low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "entropy_bound")
LatentRows = Literal["plan", "predictor"]
CacheMode = Literal["none", "prefix", "dual"]
LatentChoice = Literal["nearest", "random"]


@dataclass(frozen=True)
class SamplerConfig:
    """LLaDA reverse-process settings (names as in ``generate.py``) plus the opt-in fast modes.

    Exact mode is ``threshold=None, cache="none", early_stop=False, lookahead=None``: token-for-token the
    reference sampler. ``hidden_layer`` picks the plan latents (-1 = after the final norm; k = output of the
    first k blocks). ``denoise_fraction`` < 1 stops after that share of the steps (later positions stay masked),
    for the paper's "latents after P% of denoising" ablation. ``top_p``/``top_k``/``alg_temp`` and the
    ``maskgit_plus|topk_margin|entropy|origin`` rules are Dream's (each planner family refuses what it does not
    use); ``latent_rows`` matters for families whose logits are shifted (Dream): the plan latents are the rows at
    the plan positions (``plan``) or the rows that predicted them, one to the left (``predictor``).

    ``confidence_eos_eot_inf`` drops EoT from the confidence at every temperature and EOS only at temperature 0,
    as the reference does (at temperature > 0 it writes EOS's -inf into noisy logits it no longer reads);
    ``confidence_eos_every_temperature`` drops EOS at every temperature too (a deviation, opt-in).

    ``latent_tokens`` (He et al.'s knob; ``None`` = all, today's exact mode token for token): each forward pass
    holds the prompt, the decoded tokens, the positions being decoded (the current block and any earlier position
    still masked) and only this many further masked positions after the block — the ``nearest`` ones (default;
    deterministic) or ``random`` ones drawn uniformly each step from the generator (the paper's rule) — each at its
    true position id; the other masked positions are not computed. When fewer masked positions remain after the
    block, all of them are held. A value above ``gen_length - block_length`` (the most that can ever follow a block)
    is refused rather than clamped: it is a typo or a sweep bound, and "all" says it. Not with a KV cache.
    """

    gen_length: int = 64
    block_length: int = 32
    steps: int = 64
    temperature: float = 0.0
    remasking: Remasking = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    confidence_eos_every_temperature: bool = False
    threshold: float | None = None
    cache: CacheMode = "none"
    early_stop: bool = False
    lookahead: int | None = None
    hidden_layer: int | None = None
    denoise_fraction: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    alg_temp: float | None = None
    latent_rows: LatentRows = "plan"
    latent_tokens: int | None = None
    latent_choice: LatentChoice = "nearest"

    def __post_init__(self) -> None:
        for name in ("gen_length", "block_length", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.gen_length % self.block_length:
            raise ConfigError(f"gen_length {self.gen_length} is not divisible by block_length {self.block_length}")
        if self.steps % self.num_blocks:
            raise ConfigError(
                f"steps {self.steps} is not divisible by the number of blocks {self.num_blocks} "
                f"(gen_length {self.gen_length} / block_length {self.block_length})"
            )
        if self.steps > self.gen_length:
            # Each step reveals at least one token when there are as many steps as tokens; more would run passes
            # that reveal nothing (and that the per-row count of passes would not report).
            raise ConfigError(f"steps {self.steps} exceeds gen_length {self.gen_length} (at most one step per token)")
        for name in ("temperature", "cfg_scale", "alg_temp"):
            value = getattr(self, name)
            # nan passes every comparison below and inf turns the sampling noise into nan: both are refused here.
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.remasking not in REMASKING_RULES:
            raise ConfigError(f"remasking must be one of {', '.join(REMASKING_RULES)}, got {self.remasking!r}")
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be ≥ 0, got {self.cfg_scale}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.cache not in ("none", "prefix", "dual"):
            raise ConfigError(f"cache must be 'none', 'prefix' or 'dual', got {self.cache!r}")
        if self.lookahead is not None and self.lookahead < 0:
            raise ConfigError(f"lookahead must be ≥ 0, got {self.lookahead}")
        if self.latent_tokens is not None:
            most = self.gen_length - self.block_length
            if not isinstance(self.latent_tokens, int) or isinstance(self.latent_tokens, bool):
                raise ConfigError(f"latent_tokens must be an integer or 'all', got {self.latent_tokens!r}")
            if self.latent_tokens < 0:
                raise ConfigError(f"latent_tokens must be ≥ 0, got {self.latent_tokens}")
            if self.latent_tokens > most:
                raise ConfigError(
                    f"latent_tokens {self.latent_tokens} exceeds the {most} masked positions that can follow a block "
                    f"(gen_length {self.gen_length} - block_length {self.block_length}); use 'all' for every one"
                )
            if self.cache != "none":
                raise ConfigError(f"latent_tokens needs cache 'none' (a {self.cache!r} cache keeps the whole canvas)")
        if self.latent_choice not in ("nearest", "random"):
            raise ConfigError(f"latent_choice must be 'nearest' or 'random', got {self.latent_choice!r}")
        if not 0.0 < self.denoise_fraction <= 1.0:
            raise ConfigError(f"denoise_fraction must be in (0, 1], got {self.denoise_fraction}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.alg_temp is not None and self.alg_temp < 0:
            raise ConfigError(f"alg_temp must be ≥ 0, got {self.alg_temp}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be ≥ 1, got {self.top_k}")
        if self.latent_rows not in ("plan", "predictor"):
            raise ConfigError(f"latent_rows must be 'plan' or 'predictor', got {self.latent_rows!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def is_exact(self) -> bool:
        """True when the reference algorithm runs unchanged."""
        return (
            self.threshold is None
            and self.cache == "none"
            and not self.early_stop
            and self.lookahead is None
            and self.latent_tokens is None
        )

    @property
    def step_budget(self) -> int:
        """Denoising steps to run before stopping (all of them unless ``denoise_fraction`` < 1)."""
        return max(1, round(self.denoise_fraction * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_latent_tokens(value: str | int | None) -> int | None:
    """``--latent-tokens``: a count, or ``all`` (also ``None``) for every masked position (exact mode)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        raise ConfigError(f"--latent-tokens must be a non-negative integer or 'all', got {value!r}")
    return int(text)


# Every setting a pipeline role may carry (the latent layer belongs to the projector, not the role).
SAMPLER_KEYS = tuple(f.name for f in fields(SamplerConfig) if f.name != "hidden_layer")
