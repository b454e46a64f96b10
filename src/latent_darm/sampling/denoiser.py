"""One evaluation of the mask predictor on the canvas, and the pick-and-reveal step, shared by every strategy.

The :class:`Denoiser` owns what surrounds the network call — classifier-free guidance, the rows still being
decoded, the block KV cache, the LM head at the masked positions only, capture of the plan latents, and the
forward-pass counts — so each strategy stays a short loop that reads like the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latent_darm.errors import ConfigError
from latent_darm.models.llada.modeling import KVCache, LLaDAModelLM
from latent_darm.sampling.config import SamplerConfig
from latent_darm.sampling.schedule import gumbel_argmax, token_confidence


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the sampler treats specially."""

    mask: int
    eos: int
    eot: int | None = None


@dataclass
class SampleOutput:
    """``sequences`` [B, P+G]: the (left-padded) prompts then the generated tokens; ``hidden`` [B, G, d] the plan
    latents (for each generated position, from the last forward pass that computed it: see the strategies for
    which canvas that pass saw); ``nfe`` network evaluations of the batch (a CFG step counts two); ``row_nfe`` [B]
    evaluations that computed the row while it had a masked position to decode (a row waiting for slower rows of
    its batch is not counted)."""

    sequences: torch.Tensor
    prompt_length: int
    nfe: int
    row_nfe: torch.Tensor
    hidden: torch.Tensor | None = None

    @property
    def generated(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]


def start_canvas(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, gen_length: int, ids: SpecialIds, max_length: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompt followed by ``gen_length`` masks, and the attention mask extended with ones; validates the prompt."""
    batch, prompt_length = input_ids.shape
    if prompt_length + gen_length > max_length:
        raise ConfigError(
            f"prompt of {prompt_length} tokens + gen_length {gen_length} exceeds the model's "
            f"max_sequence_length {max_length}"
        )
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ConfigError(f"attention_mask shape {list(attention_mask.shape)} != input_ids {list(input_ids.shape)}")
        if bool((input_ids[attention_mask == 0] == ids.mask).any()):
            raise ConfigError(f"the pad token id equals the mask token id {ids.mask}; pick another pad token")
        real = attention_mask.bool()
    else:
        real = torch.ones_like(input_ids, dtype=torch.bool)
    if bool((input_ids[real] == ids.mask).any()):
        raise ConfigError(f"a prompt contains the mask token id {ids.mask}; infilling prompts are not supported")
    canvas = torch.full((batch, prompt_length + gen_length), ids.mask, dtype=torch.long, device=input_ids.device)
    canvas[:, :prompt_length] = input_ids
    if attention_mask is None:
        return canvas, None
    ones = torch.ones((batch, gen_length), dtype=attention_mask.dtype, device=attention_mask.device)
    return canvas, torch.cat((attention_mask, ones), dim=1)


@dataclass
class Predictions:
    """Logits [N, V] at the N masked positions of a window: canvas row ``rows[i]``, window column ``columns[i]``."""

    logits: torch.Tensor
    rows: torch.Tensor
    columns: torch.Tensor


class Denoiser:
    """Evaluates the model on (some rows of) the canvas and returns logits only where a mask can be revealed."""

    def __init__(
        self,
        model: LLaDAModelLM,
        canvas: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_length: int,
        config: SamplerConfig,
        ids: SpecialIds,
    ) -> None:
        self.model, self.config, self.ids = model, config, ids
        self.prompt_length = prompt_length
        self.batch = canvas.shape[0]
        self.guided = config.cfg_scale > 0
        # CFG's unconditional branch sees every prompt position (pads included) replaced by the mask, as the reference.
        self.prompt_index = canvas != ids.mask
        self.attention_mask = attention_mask
        self.cache: KVCache | None = None
        self.cache_rows: torch.Tensor | None = None  # canvas rows the cache holds, in order
        self.nfe = 0
        self.row_nfe = torch.zeros(self.batch, dtype=torch.long)
        self.hidden: torch.Tensor | None = None

    def __call__(
        self,
        canvas: torch.Tensor,
        window: tuple[int, int],
        rows: torch.Tensor | None = None,
        *,
        visible_end: int | None = None,
        columns: torch.Tensor | None = None,
        span: tuple[int, int] | None = None,
        fill_cache: bool = False,
    ) -> Predictions:
        """Logits at the masked positions of ``window`` for the canvas ``rows`` (all rows when ``None``).

        ``visible_end`` truncates the canvas (fewer masked positions in the pass); ``columns`` (sorted canvas
        positions, all of ``[0, window end)`` among them) runs only those, at their true position ids (latent
        tokens); ``fill_cache`` runs the visible canvas and keeps its keys/values; ``span`` then recomputes only
        ``[start, end)`` against them (the rows of such a pass must be among those that filled the cache).
        """
        every_row = rows is None
        row_index = torch.arange(self.batch, device=canvas.device) if rows is None else rows
        end = canvas.shape[1] if visible_end is None else visible_end
        inputs = canvas[:, :end] if every_row else canvas[row_index, :end]
        mask = self.attention_mask
        if mask is not None:
            mask = mask[:, :end] if every_row else mask[row_index, :end]
        prompt_index = self.prompt_index[:, :end] if every_row else self.prompt_index[row_index, :end]
        if columns is not None:
            inputs, prompt_index = inputs[:, columns], prompt_index[:, columns]
            mask = None if mask is None else mask[:, columns]
        if self.guided:
            inputs = torch.cat((inputs, inputs.masked_fill(prompt_index, self.ids.mask)), dim=0)
            mask = None if mask is None else torch.cat((mask, mask), dim=0)
        offset = 0
        if fill_cache:
            self.cache, self.cache_rows = KVCache(), row_index
        if span is not None:
            assert self.cache is not None, "a span pass needs a cache filled by an earlier pass"
            offset = span[0]
            inputs = inputs[:, span[0] : span[1]]
            self.cache.rows = self._cache_index(row_index)
        output = self.model(
            inputs,
            mask,
            cache=self.cache if (fill_cache or span is not None) else None,
            span=span,
            hidden_layer=self.config.hidden_layer,
            logits_slice=None,
            position_ids=columns,
        )
        masked = canvas[row_index, window[0] : window[1]] == self.ids.mask
        local, in_window = masked.nonzero(as_tuple=True)
        states = output.last_hidden_state
        at = in_window + (window[0] - offset)
        if self.guided:
            both = self.model.lm_head(torch.cat((states[local, at], states[local + len(row_index), at])))
            conditional, unconditional = both.chunk(2, dim=0)
            logits = unconditional + (self.config.cfg_scale + 1) * (conditional - unconditional)
        else:
            logits = self.model.lm_head(states[local, at])
        evaluations = 2 if self.guided else 1
        self.nfe += evaluations
        self.row_nfe[row_index[masked.any(dim=1)].cpu()] += evaluations
        if output.hidden is not None:
            hidden = output.hidden[: len(row_index)]
            if columns is None:
                columns = torch.arange(offset, offset + hidden.shape[1], device=hidden.device)
            self._keep_hidden(hidden, row_index, columns)
        return Predictions(logits, row_index[local], in_window)

    def _cache_index(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Positions of ``rows`` in the cache (both CFG halves), or ``None`` when the pass covers every cached row."""
        assert self.cache_rows is not None
        if len(rows) == len(self.cache_rows):
            return None
        index = torch.searchsorted(self.cache_rows, rows)
        return torch.cat((index, index + len(self.cache_rows))) if self.guided else index

    def _keep_hidden(self, hidden: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> None:
        """Store the hidden states [R, C, d] of the generated positions this pass computed (canvas ``columns``), for
        the rows it computed."""
        if self.hidden is None:
            gen_length = self.config.gen_length
            self.hidden = hidden.new_zeros((self.batch, gen_length, hidden.shape[-1]))
        generated = columns >= self.prompt_length
        positions = columns[generated] - self.prompt_length
        self.hidden[rows[:, None], positions[None, :]] = hidden[:, generated]

    def output(self, canvas: torch.Tensor) -> SampleOutput:
        return SampleOutput(canvas, self.prompt_length, self.nfe, self.row_nfe, self.hidden)


def candidate_window(canvas: torch.Tensor, block: tuple[int, int], prompt_length: int, mask_id: int) -> tuple[int, int]:
    """Canvas positions that may be revealed now: the block, widened left to any still-masked earlier position.

    Earlier blocks keep a mask only when the model proposed the mask token itself; the reference then lets that
    position compete again in later blocks, so we do too.
    """
    leftover = (canvas[:, prompt_length : block[0]] == mask_id).any(dim=0).nonzero()
    start = prompt_length + int(leftover[0]) if len(leftover) else block[0]
    return start, block[1]


def rows_to_decode(canvas: torch.Tensor, window: tuple[int, int], mask_id: int) -> torch.Tensor:
    """Rows that still have a masked position in ``window`` (the others sit this pass out)."""
    return (canvas[:, window[0] : window[1]] == mask_id).any(dim=1).nonzero().squeeze(1)


def blocks(config: SamplerConfig, prompt_length: int) -> list[tuple[int, int]]:
    """Canvas ranges of the semi-autoregressive blocks, left to right."""
    starts = range(prompt_length, prompt_length + config.gen_length, config.block_length)
    return [(start, start + config.block_length) for start in starts]


def held_columns(
    config: SamplerConfig,
    block: tuple[int, int],
    length: int,
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor | None:
    """``latent_tokens``: the canvas columns a pass holds — everything up to the block's end, then n of the masked
    positions after it (the nearest, or drawn uniformly) — or ``None`` for the whole canvas."""
    if config.latent_tokens is None:
        return None
    after = length - block[1]
    n = min(config.latent_tokens, after)
    if config.latent_choice == "nearest" or n == after:
        chosen = torch.arange(block[1], block[1] + n, device=device)
    else:
        chosen = block[1] + torch.randperm(after, generator=generator, device=device)[:n].sort().values
    return torch.cat((torch.arange(block[1], device=device), chosen))


def visible_end(config: SamplerConfig, block: tuple[int, int], length: int) -> int:
    """End of the canvas a pass sees: everything, or ``lookahead`` masked positions after the block."""
    return length if config.lookahead is None else min(length, block[1] + config.lookahead)


def fill_after_eos_blocks(canvas: torch.Tensor, block: tuple[int, int], ids: SpecialIds) -> None:
    """``early_stop``: a row whose finished block is all EOS gets EOS everywhere after it."""
    finished = (canvas[:, block[0] : block[1]] == ids.eos).all(dim=1)
    canvas[finished, block[1] :] = ids.eos


def reference_uniform(
    predictions: Predictions,
    window: tuple[int, int],
    canvas_shape: tuple[int, int],
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The reference's Gumbel noise (uniform u over the whole canvas and vocabulary, float64) at the predicted
    positions [N, V]. On CPU it is drawn one row at a time — the same numbers as one [B, T, V] draw, with a B times
    smaller peak; on other devices in one draw, as the reference does."""
    batch, length = canvas_shape
    vocab = predictions.logits.shape[-1]
    positions = predictions.columns + window[0]
    if device.type != "cpu":
        noise = torch.rand((batch, length, vocab), dtype=torch.float64, device=device, generator=generator)
        return noise[predictions.rows, positions]
    parts = []
    for row in range(batch):
        noise = torch.rand((length, vocab), dtype=torch.float64, generator=generator)
        parts.append(noise[positions[predictions.rows == row]])
    return torch.cat(parts)


def local_draws(
    logits: torch.Tensor, batch: int, visible: int, config: SamplerConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The fast strategies' random draws: Gumbel noise at the predicted positions only (not the reference's
    whole-canvas draw, which they cannot reproduce anyway), and the random-remasking draw over the visible canvas."""
    uniform = None
    if config.temperature > 0:
        uniform = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    remask_draw = None
    if config.remasking == "random":
        remask_draw = torch.rand((batch, visible), device=logits.device, generator=generator)
    return uniform, remask_draw


def pick(
    predictions: Predictions,
    canvas: torch.Tensor,
    window: tuple[int, int],
    config: SamplerConfig,
    ids: SpecialIds,
    uniform: torch.Tensor | None,
    remask_draw: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate tokens [B, W] and their confidence [B, W] (-inf where not masked) for the window.

    ``uniform`` [N, V] is the Gumbel noise at the predicted positions (temperature > 0) and ``remask_draw`` [B, T]
    the canvas-wide uniform draw of random remasking; the strategies draw both, the exact one as the reference does.
    EOS/EoT exclusion follows the reference: EoT always, EOS only at temperature 0 (at temperature > 0 the reference
    writes -inf into the noisy logits it no longer reads) unless ``confidence_eos_every_temperature``.
    """
    logits = predictions.logits
    if config.logits_eos_inf:
        logits = logits.clone()
        logits[:, ids.eos] = -torch.inf
    x0 = gumbel_argmax(logits, config.temperature, uniform)
    rows, columns = predictions.rows, predictions.columns
    if config.remasking == "low_confidence":
        excluded: tuple[int, ...] = ()
        if config.confidence_eos_eot_inf:
            with_eos = config.temperature == 0 or config.confidence_eos_every_temperature
            excluded = ((ids.eos,) if with_eos else ()) + ((ids.eot,) if ids.eot is not None else ())
        confidence = token_confidence(logits, x0, excluded)
    else:
        assert remask_draw is not None
        confidence = remask_draw[rows, columns + window[0]]
    tokens = canvas[:, window[0] : window[1]].clone()
    tokens[rows, columns] = x0
    scores = torch.full(tokens.shape, -torch.inf, dtype=confidence.dtype, device=tokens.device)
    scores[rows, columns] = confidence
    return tokens, scores


def reveal(canvas: torch.Tensor, window: tuple[int, int], tokens: torch.Tensor, chosen: torch.Tensor) -> None:
    """Write the chosen candidate tokens into the canvas window, in place."""
    current = canvas[:, window[0] : window[1]]
    canvas[:, window[0] : window[1]] = torch.where(chosen, tokens, current)
