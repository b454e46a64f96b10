"""Dream's reverse process, equal token for token to the official ``diffusion_generate`` (Dream-org, hub code).

The whole canvas (prompt, then ``gen_length`` masks) is denoised at once in ``steps`` passes over a float32
timestep grid ``linspace(1, 1e-3, steps + 1)``. At step i (t, s = grid[i], grid[i + 1]) the logits used for
position j are the network's raw logits at j − 1 (Dream keeps the autoregressive shift), and

* ``maskgit_plus`` / ``topk_margin`` / ``entropy`` reveal the k = int(m · (1 − s/t)) most confident masked
  positions (m = masks per row averaged over the batch; the last step reveals int(m)), or draw them from
  softmax(confidence / ``alg_temp``) when ``alg_temp`` > 0;
* ``origin`` reveals each masked position independently with probability 1 − s/t (1 at the last step).

Official quirks kept on purpose, because they are the semantics users' numbers come from: the choice of positions
runs over the whole canvas (a row with fewer masks than k gets mask ids written at −inf-confidence positions); a
proposed mask id leaves its position masked; confidences are computed in the logits' dtype. Left padding: keys
at pads are masked out and positions are ``cumsum(mask) − 1`` (pads get 1), as the official code does.

Fast modes (approximations, opt-in): ``threshold`` reveals every masked position whose confidence is ≥ τ (always
the most confident one per row) until none is left; ``cache="prefix"`` keeps the keys/values of the prompt (all but
its last token) from the first pass and recomputes only the rest — the prompt's keys would change as the canvas
is revealed, so this is Fast-dLLM's approximation, with each row's own positions and pad mask kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from latent_darm.errors import ConfigError
from latent_darm.models.dream.modeling import DreamModel, PrefixCache
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds

ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")
EPS = 1e-3  # the official generation config's ``eps``: the last timestep


@dataclass(frozen=True)
class DreamSamplerConfig(SamplerConfig):
    """Dream's settings, named as in the official ``diffusion_generate`` where it has them (``remasking`` is its
    ``alg``). ``threshold`` and ``cache="prefix"`` are the opt-in fast modes; ``denoise_fraction`` < 1 stops after
    that share of the steps. ``latent_rows``: Dream's logits are shifted, so the plan latents are the rows at the
    plan positions (``plan``) or the rows that predicted them, one to the left (``predictor``)."""

    family: ClassVar[str] = "Dream"

    temperature: float = 0.0
    remasking: Literal["maskgit_plus", "topk_margin", "entropy", "origin"] = "maskgit_plus"
    top_p: float | None = None
    top_k: int | None = None
    alg_temp: float | None = None
    threshold: float | None = None
    cache: Literal["none", "prefix"] = "none"
    denoise_fraction: float = 1.0
    latent_rows: Literal["plan", "predictor"] = "plan"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_steps_fit()
        for name in ("temperature", "alg_temp"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0, got {self.temperature}")
        self.check_choice("remasking", ALGS)
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be ≥ 1, got {self.top_k}")
        if self.alg_temp is not None and self.alg_temp < 0:
            raise ConfigError(f"alg_temp must be ≥ 0, got {self.alg_temp}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.cache not in ("none", "prefix"):
            raise ConfigError(f"cache {self.cache!r} is not available for Dream; valid: none, prefix")
        if self.threshold is not None and self.remasking not in ("maskgit_plus", "topk_margin"):
            raise ConfigError("threshold needs remasking maskgit_plus or topk_margin (a probability-like confidence)")
        if not 0.0 < self.denoise_fraction <= 1.0:
            raise ConfigError(f"denoise_fraction must be in (0, 1], got {self.denoise_fraction}")
        if self.latent_rows not in ("plan", "predictor"):
            raise ConfigError(f"latent_rows must be 'plan' or 'predictor', got {self.latent_rows!r}")

    @property
    def step_budget(self) -> int:
        """Denoising steps to run before stopping (all of them unless ``denoise_fraction`` < 1)."""
        return max(1, round(self.denoise_fraction * self.steps))


def filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Nucleus then top-k filtering, removed entries set to the dtype's minimum (official order and fill)."""
    lowest = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        drop = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1) > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter_(-1, order, drop), lowest)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, lowest)
    return logits


def propose(
    logits: torch.Tensor, config: DreamSamplerConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence [N], token [N]) for N masked positions' logits [N, V] under ``config.remasking``."""
    if config.temperature > 0:
        logits = logits / config.temperature
    probs = torch.softmax(filter_logits(logits, config.top_p, config.top_k), dim=-1)
    if config.temperature > 0:
        # torch.distributions.Categorical(probs).sample(), with our generator.
        tokens = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, True, generator=generator).squeeze(-1)
        confidence = probs.gather(-1, tokens[:, None]).squeeze(-1)
    else:
        confidence, tokens = probs.max(dim=-1)
    if config.remasking == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif config.remasking == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return confidence, tokens


def padding_inputs(attention_mask: torch.Tensor | None, total: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Canvas-wide key mask and position ids for left-padded prompts (``None`` when there is no padding)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None, None
    batch, prompt = attention_mask.shape
    mask = torch.cat((attention_mask, attention_mask.new_ones((batch, total - prompt))), dim=1)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return mask, positions


def check_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, ids: SpecialIds) -> None:
    if input_ids.shape[1] == 0:
        raise ConfigError("Dream needs a prompt of at least one token (its first answer token is predicted from it)")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ConfigError(f"attention_mask shape {list(attention_mask.shape)} != input_ids {list(input_ids.shape)}")
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if bool((input_ids[real] == ids.mask).any()):
        raise ConfigError(f"a prompt contains the mask token id {ids.mask}; infilling prompts are not supported")
    if attention_mask is not None and bool((input_ids[~real] == ids.mask).any()):
        raise ConfigError(f"the pad token id equals the mask token id {ids.mask}; pick another pad token")


class Canvas:
    """The canvas plus what every pass needs: pad mask, positions, the prefix cache and the latents' rows."""

    def __init__(
        self,
        model: DreamModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: DreamSamplerConfig,
    ) -> None:
        self.model, self.config = model, config
        self.batch, self.prompt_length = input_ids.shape
        total = self.prompt_length + config.gen_length
        if total > model.config.max_position_embeddings:
            raise ConfigError(
                f"prompt of {self.prompt_length} tokens + gen_length {config.gen_length} exceeds the model's "
                f"max_position_embeddings {model.config.max_position_embeddings}"
            )
        self.tokens = F.pad(input_ids, (0, config.gen_length), value=model.config.mask_token_id)
        self.key_mask, self.positions = padding_inputs(attention_mask, total)
        self.cache: PrefixCache | None = None
        self.nfe = 0
        self.row_nfe = torch.zeros(self.batch, dtype=torch.long)
        self.hidden: torch.Tensor | None = None

    def shifted_logits(self, first: int, mask_id: int) -> torch.Tensor:
        """Logits [B, T − first, V] for canvas columns ``first``… : column j scored by the raw row j − 1."""
        total = self.tokens.shape[1]
        use_cache = self.config.cache == "prefix"
        active = (self.tokens == mask_id).any(dim=1).cpu()
        if use_cache and self.cache is None:
            # Full pass that also keeps the prompt's keys/values (all but its last token, whose row scores column P).
            self.cache = PrefixCache(self.prompt_length - 1)
            out = self.model(
                self.tokens,
                self.key_mask,
                self.positions,
                cache=self.cache,
                fill_cache=True,
                logits_slice=slice(max(first - 1, 0), total - 1),
            )
            offset = 0
        elif use_cache:
            assert self.cache is not None
            offset = self.cache.length
            positions = None if self.positions is None else self.positions[:, offset:]
            out = self.model(
                self.tokens[:, offset:],
                self.key_mask,
                positions,
                cache=self.cache,
                logits_slice=slice(max(first - 1, 0) - offset, total - 1 - offset),
            )
        else:
            offset = 0
            out = self.model(
                self.tokens, self.key_mask, self.positions, logits_slice=slice(max(first - 1, 0), total - 1)
            )
        self.nfe += 1
        self.row_nfe += active.long()
        self._keep_latents(out, offset)
        logits = out.logits
        assert logits is not None
        if first == 0:  # column 0 has no left neighbour: the official code reuses raw row 0
            logits = torch.cat((logits[:, :1], logits), dim=1)
        return logits

    def _keep_latents(self, out: object, offset: int) -> None:
        """Rows of the plan latents from this (the latest) pass: at the plan positions or one to the left."""
        layer = self.config.hidden_layer
        if layer is None:
            return
        states = out.last_hidden_state if layer < 0 else out.hidden_states[layer]  # type: ignore[attr-defined]
        first = self.prompt_length - (1 if self.config.latent_rows == "predictor" else 0)
        self.hidden = states[:, first - offset : first - offset + self.config.gen_length]

    def output(self) -> SampleOutput:
        return SampleOutput(self.tokens, self.prompt_length, self.nfe, self.row_nfe, self.hidden)


@torch.no_grad()
def dream_generate(
    model: DreamModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: DreamSamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` masks after the left-padded prompts ``input_ids`` [B, P]."""
    check_prompt(input_ids, attention_mask, ids)
    canvas = Canvas(model, input_ids, attention_mask, config)
    if config.threshold is not None:
        return _threshold_loop(canvas, config, ids, generator)
    grid = timestep_grid(config.steps, input_ids.device)
    for i in range(config.step_budget):
        masked = canvas.tokens == ids.mask
        columns = masked.any(dim=0).nonzero()
        if config.cache == "prefix":
            columns = columns[columns >= canvas.prompt_length]
        if len(columns) == 0:
            break
        first = int(columns[0])
        masked[:, :first] = False
        logits = canvas.shifted_logits(first, ids.mask)[masked[:, first:]]
        last = i == config.steps - 1
        if config.remasking == "origin":
            _reveal_origin(canvas, masked, logits, 1 if last else 1 - grid[i + 1] / grid[i], config, ids, generator)
        else:
            _reveal_top(canvas, masked, logits, reveal_count(masked, grid, i), config, ids, generator)
    return canvas.output()


def timestep_grid(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The official float32 grid ``linspace(1, eps, steps + 1)``."""
    return torch.linspace(1, EPS, steps + 1, device=device)


def reveal_count(masked: torch.Tensor, grid: torch.Tensor, i: int) -> int:
    """Positions to reveal at step i: int(m · (1 − s/t)) in float32, m = masks per row averaged over the batch;
    the last step reveals int(m). E.g. N = 32, steps = 32 gives 0, then 1 ×30, then 2."""
    average = masked.sum() / masked.shape[0]
    if i == len(grid) - 2:
        return int(average)
    return int(average * (1 - grid[i + 1] / grid[i]))


def _reveal_origin(
    canvas: Canvas,
    masked: torch.Tensor,
    logits: torch.Tensor,
    p_transfer: torch.Tensor | int,
    config: DreamSamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None,
) -> None:
    proposal = torch.full((logits.shape[0],), ids.mask, dtype=torch.long, device=logits.device)
    transfer = torch.rand(proposal.shape, device=logits.device, generator=generator) < p_transfer
    proposal[transfer] = propose(logits[transfer], config, generator)[1]
    canvas.tokens[masked] = proposal


def _reveal_top(
    canvas: Canvas,
    masked: torch.Tensor,
    logits: torch.Tensor,
    count: int,
    config: DreamSamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None,
) -> None:
    confidence, tokens = propose(logits, config, generator)
    if count <= 0:
        return
    scores = torch.full(canvas.tokens.shape, -torch.inf, dtype=logits.dtype, device=logits.device)
    scores[masked] = confidence
    if config.alg_temp:
        chosen = torch.multinomial(F.softmax(scores / config.alg_temp, dim=-1), count, generator=generator)
    else:
        chosen = torch.topk(scores, count).indices
    proposal = torch.full_like(canvas.tokens, ids.mask)
    proposal[masked] = tokens
    canvas.tokens.scatter_(1, chosen, proposal.gather(1, chosen))


def _threshold_loop(
    canvas: Canvas, config: DreamSamplerConfig, ids: SpecialIds, generator: torch.Generator | None
) -> SampleOutput:
    """Reveal every masked position with confidence ≥ τ, at least the best one per row, until none is left."""
    assert config.threshold is not None
    start = canvas.prompt_length
    for _ in range(config.step_budget if config.denoise_fraction < 1 else config.gen_length):
        masked = canvas.tokens == ids.mask
        masked[:, :start] = False
        if not bool(masked.any()):
            break
        logits = canvas.shifted_logits(start, ids.mask)[masked[:, start:]]
        confidence, tokens = propose(logits, config, generator)
        scores = torch.full(canvas.tokens.shape, -torch.inf, dtype=confidence.dtype, device=confidence.device)
        scores[masked] = confidence
        chosen = scores >= config.threshold
        best = scores.argmax(dim=1, keepdim=True)
        chosen.scatter_(1, best, masked.any(dim=1, keepdim=True))
        chosen &= masked
        proposal = torch.full_like(canvas.tokens, ids.mask)
        proposal[masked] = tokens
        canvas.tokens[chosen] = proposal[chosen]
    return canvas.output()
