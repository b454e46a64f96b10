"""Decoding the answer region, batched, with a count of forward passes and tokens computed.

Diffusion variants take ``steps = answer length / k`` steps. Each step, with m masked positions left:

1. candidates: with ``selection = "random"`` (default) k masked positions drawn uniformly — a uniform random
   order (the authors' SCDM sweep); with ``"confidence"``, ``candidates`` masked positions drawn uniformly
   (``None``: all of them, the authors' MDM/SIDM rule), of which the k whose sampled token is most probable are
   committed;
2. latent tokens: n further masked positions drawn uniformly from the rest (``mdm``: all of them; ``sidm``: none,
   it cannot read them; ``scdm``: the knob, clamped to what is left — so n = ``None`` means "all");
3. the forward pass holds only the clean tokens (prompt and committed answer tokens), the latents and the
   candidates, clean-first with their true position ids, under the variant's pattern; every other masked
   position is dropped, so a pass costs c + n + candidates tokens. Under SCDM a candidate reads the latents and
   (``chain_candidates``, the default) the candidates before it in the order.

``ar`` decodes left to right over the prefix (causal, :func:`decode_causal`); ``ar-mtp`` / ``ar-ntp`` left to right
over the prefix and the next ``window`` MASK positions (``None``: all remaining), full attention
(:func:`decode_window`). Which variant decodes how is its entry in :mod:`.variants`. Committed tokens are
sampled with Gumbel noise at ``temperature`` (the authors: 1; 0 = argmax) over the vocabulary without [MASK],
[PAD] and the padded rows; the noise comes from the run's seeded generator, so decoding is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.objectives import excluded_ids
from latent_darm.latent_tokens.patterns import AttentionRule, causal_pattern, diffusion_pattern
from latent_darm.models.llada.modeling import LLaDAModelLM

SELECTIONS = ("confidence", "random")


@dataclass(frozen=True)
class DecodeSettings:
    """``k`` tokens per step; ``selection`` random (the default: a uniform order, as the authors' SCDM) or
    confidence (the k most probable of ``candidates`` random masked positions, ``None`` = all of them, as the
    authors' MDM/SIDM); tokens sampled at ``temperature`` (0 = argmax)."""

    k: int = 1
    selection: str = "random"
    candidates: int | None = None
    temperature: float = 1.0
    chain_candidates: bool = True  # SCDM: a candidate reads the candidates before it in the order too

    def scored(self, remaining: int) -> int:
        """Masked positions scored at a step with ``remaining`` left: k for random selection, else candidates."""
        if self.selection == "random":
            return min(self.k, remaining)
        return remaining if self.candidates is None else min(self.candidates, remaining)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"--k: tokens per step must be at least 1, got {self.k}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r}; expected one of {', '.join(SELECTIONS)}")
        if self.candidates is not None and self.candidates < self.k:
            raise ConfigError(
                f"--candidates: {self.candidates} must be ≥ {self.k} (--k, the tokens committed per step) or 'all'"
            )
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ConfigError(f"--temperature: {self.temperature} must be ≥ 0 and finite (0 = argmax)")

    def label(self) -> str:
        """How positions are chosen, for tables: 'random order' or 'top-p of N|all'."""
        if self.selection == "random":
            return "random order"
        return f"top-p of {'all' if self.candidates is None else self.candidates}"


def sample(
    logits: torch.Tensor, model: LLaDAModelLM, temperature: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability, token) per position: Gumbel-max sampling at ``temperature`` (0: argmax) over the committable
    vocabulary; the probability is the model's softmax at the chosen token (the confidence)."""
    logits = _committable(logits, model)
    if temperature == 0:
        values = logits.argmax(-1)
    else:
        uniform = torch.rand(logits.shape, generator=generator).clamp(min=1e-20).to(logits.device)
        values = (logits / temperature - torch.log(-torch.log(uniform))).argmax(-1)
    confidence = logits.softmax(-1).gather(-1, values[..., None])[..., 0]
    return confidence, values


@dataclass
class Decoded:
    """[B, L] answer ids; ``forward_passes`` and ``tokens`` (columns computed, summed over passes, per row)."""

    answers: torch.Tensor
    forward_passes: int
    tokens: int


def _committable(logits: torch.Tensor, model: LLaDAModelLM) -> torch.Tensor:
    """float32 logits with :func:`excluded_ids` ([MASK], [PAD], padded vocabulary rows) ruled out."""
    excluded = torch.tensor(excluded_ids(model), device=logits.device)
    return logits.float().index_fill(-1, excluded, float("-inf"))  # out of place: the caller's logits stay


@torch.no_grad()
def decode_diffusion(
    model: LLaDAModelLM,
    prompts: torch.Tensor,
    answer_length: int,
    attention: AttentionRule,
    latent: int | None,
    settings: DecodeSettings,
    generator: torch.Generator,
) -> Decoded:
    """Decode ``answer_length`` positions after ``prompts`` [B, P] under the ``attention`` rule with at most
    ``latent`` latent tokens per pass (None = every spare masked position)."""
    if latent is not None and latent < 0:
        raise ConfigError(f"number of latent tokens must be ≥ 0, got {latent}")
    device = model.device
    batch, prompt_length = prompts.shape
    mask_id = model.config.mask_token_id
    canvas = torch.cat((prompts, torch.full((batch, answer_length), mask_id, dtype=torch.long)), dim=1).to(device)
    decoded = torch.zeros(batch, answer_length, dtype=torch.bool, device=device)
    passes = tokens = 0
    while not bool(decoded.all()):
        remaining = answer_length - int(decoded[0].sum())
        k = min(settings.k, remaining)
        n_cand = settings.scored(remaining)
        spare = remaining - n_cand
        n = spare if latent is None else min(latent, spare)
        # a uniform random order of the masked positions, per row: candidates first, then latents
        keys = torch.rand(batch, answer_length, generator=generator).to(device) + decoded.float() * 2
        order = torch.argsort(keys, dim=1)
        candidates = order[:, :n_cand]
        latents = order[:, n_cand : n_cand + n]
        clean = torch.argsort((~decoded).int(), dim=1, stable=True)[:, : answer_length - remaining]
        answer_cols = torch.cat((clean, latents, candidates), dim=1) + prompt_length
        prompt_cols = torch.arange(prompt_length, device=device).expand(batch, -1)
        columns = torch.cat((prompt_cols, answer_cols), dim=1)
        length = columns.shape[1]
        pattern = diffusion_pattern(
            attention, length - n - n_cand, length, targets=n_cand, chain_targets=settings.chain_candidates
        ).to(device)
        logits = model(
            canvas.gather(1, columns),
            position_ids=columns,
            attention_pattern=pattern,
            logits_slice=slice(-n_cand, None),
        ).logits
        assert logits is not None
        confidence, values = sample(logits, model, settings.temperature, generator)
        if settings.selection == "random":
            pick = torch.arange(k, device=device).expand(batch, -1)
        else:
            pick = confidence.topk(k, dim=1).indices
        positions = candidates.gather(1, pick)
        canvas.scatter_(1, positions + prompt_length, values.gather(1, pick))
        decoded.scatter_(1, positions, True)
        passes += 1
        tokens += length
    return Decoded(canvas[:, prompt_length:].cpu(), passes, tokens)


def decode_causal(
    model: LLaDAModelLM,
    prompts: torch.Tensor,
    answer_length: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> Decoded:
    """``ar``: left to right, one token per pass over the causal prefix."""

    def forward(canvas: torch.Tensor, here: int, _: int) -> tuple[torch.Tensor, int]:
        pattern = causal_pattern(here).to(canvas.device)
        out = model(canvas[:, :here], attention_pattern=pattern, logits_slice=slice(-1, None))
        assert out.logits is not None
        return out.logits[:, 0], out.last_hidden_state.shape[1]

    return _left_to_right(model, prompts, answer_length, forward, temperature, generator)


def decode_window(
    model: LLaDAModelLM,
    prompts: torch.Tensor,
    answer_length: int,
    window: int | None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> Decoded:
    """``ar-mtp`` / ``ar-ntp``: left to right, one token per pass over the prefix and ``window`` MASK positions
    (None = all remaining), full attention; the first MASK position is committed."""
    if window is not None and window < 1:
        raise ConfigError(f"window w must be at least 1, got {window}")

    def forward(canvas: torch.Tensor, here: int, left: int) -> tuple[torch.Tensor, int]:
        visible = here + (left if window is None else min(window, left))
        out = model(canvas[:, :visible], logits_slice=slice(here, here + 1))
        assert out.logits is not None
        return out.logits[:, 0], out.last_hidden_state.shape[1]

    return _left_to_right(model, prompts, answer_length, forward, temperature, generator)


Forward = Callable[[torch.Tensor, int, int], tuple[torch.Tensor, int]]  # (canvas, here, left) → (logits, columns)


@torch.no_grad()
def _left_to_right(
    model: LLaDAModelLM,
    prompts: torch.Tensor,
    answer_length: int,
    forward: Forward,
    temperature: float,
    generator: torch.Generator | None,
) -> Decoded:
    """One token per pass at column ``here``, from ``forward``'s logits for it; ``left`` answer cells remain."""
    device = model.device
    batch, prompt_length = prompts.shape
    mask_id = model.config.mask_token_id
    canvas = torch.cat((prompts, torch.full((batch, answer_length), mask_id, dtype=torch.long)), dim=1).to(device)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)  # one stream, every step
    passes = tokens = 0
    for step in range(answer_length):
        here = prompt_length + step
        logits, columns = forward(canvas, here, answer_length - step)
        _, values = sample(logits, model, temperature, generator)
        canvas[:, here] = values
        passes += 1
        tokens += columns
    return Decoded(canvas[:, prompt_length:].cpu(), passes, tokens)
