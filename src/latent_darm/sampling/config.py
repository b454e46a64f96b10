"""Settings of the diffusion sampler, checked once, up front, with errors that name the field."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from latent_darm.errors import ConfigError

Remasking = Literal["low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "entropy_bound"]
# Every family's position-choice rules; each planner family accepts its own subset (models/<family>/family.py).
REMASKING_RULES = ("low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "entropy_bound")
LatentRows = Literal["plan", "predictor"]
CacheMode = Literal["none", "prefix", "dual"]


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
    """

    gen_length: int = 64
    block_length: int = 32
    steps: int = 64
    temperature: float = 0.0
    remasking: Remasking = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
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
        if not 0.0 < self.denoise_fraction <= 1.0:
            raise ConfigError(f"denoise_fraction must be in (0, 1], got {self.denoise_fraction}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
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
        return self.threshold is None and self.cache == "none" and not self.early_stop and self.lookahead is None

    @property
    def step_budget(self) -> int:
        """Denoising steps to run before stopping (all of them unless ``denoise_fraction`` < 1)."""
        return max(1, round(self.denoise_fraction * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
