"""Fast-dLLM's approximations of LLaDA's reverse process, from the exact sampler's pieces (``sampler.py``).

* :func:`generate_threshold` — parallel decoding without a cache: reveal every masked position of the block whose
  confidence is ≥ τ (at least one per step), so a block ends as soon as it has no masks and easy blocks take few
  passes. Rows of a batch finish blocks at different steps; a row whose block is done sits out the passes until
  the others catch up (it is not computed). Latents: as in exact mode, from the row's last pass, an uncached pass
  over its canvas as it was before its last step.
* :func:`generate_cached` — the block KV cache, ``prefix`` or ``dual``, with the schedule of exact mode or τ. At
  the first step of a block one pass runs the whole visible canvas and keeps every position's keys/values. Later
  steps of the block recompute a span and read every other position from the cache (the span's own keys and
  values are written back into it in place): ``prefix``: the span is the block and everything after it (the
  prefix before the block comes from the cache); ``dual``: the span is the block alone (prefix *and* masked suffix
  come from the cache). The span starts where the block's candidate window started (earlier positions still
  masked included).

Cache latents: a position's hidden state from the last pass that computed it. Positions before the last block were
last computed by that block's first pass, an uncached pass over the final canvas with the last block still masked;
positions the spans recompute carry the span pass's (approximate, cached) hidden states, except that the output of
the first layer (``hidden_layer=1``) is exact in every pass, because the first layer's keys and values depend on
the tokens alone and the cached ones were computed from the same tokens. Noise is drawn only where it is used
(:func:`local_draws`).
"""

from __future__ import annotations

import torch

from latent_darm.models.llada.denoiser import Denoiser, Predictions
from latent_darm.models.llada.modeling import KVCache, LLaDAModelLM
from latent_darm.models.llada.sampler import (
    blocks,
    candidate_window,
    fill_after_eos_blocks,
    held_columns,
    num_transfer_tokens,
    pick,
    reveal,
    start_canvas,
    top_k_per_row,
    visible_end,
)
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SampleOutput, SpecialIds


@torch.no_grad()
def generate_threshold(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: LLaDASamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Same contract as :func:`~latent_darm.models.llada.sampler.generate_exact`, revealing by ``config.threshold``."""
    assert config.threshold is not None
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        visible = visible_end(config, block, canvas.shape[1])
        step = 0
        while step < config.block_length and bool((canvas[:, block[0] : block[1]] == ids.mask).any()):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            columns = held_columns(config, block, visible, canvas.device, generator)
            rows = rows_to_decode(canvas, window, ids.mask)
            predictions = denoise(canvas, window, rows, visible_end=visible, columns=columns)
            uniform, remask_draw = local_draws(predictions.logits, canvas.shape[0], visible, config, generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            reveal(canvas, window, tokens, above_threshold(confidence, config.threshold))
            step += 1
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
    return denoise.output(canvas)


@torch.no_grad()
def generate_cached(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: LLaDASamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Block KV cache (``config.cache``: ``prefix`` or ``dual``), revealing by schedule or by ``config.threshold``."""
    assert config.cache in ("prefix", "dual")
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = CachedDenoiser(model, canvas, mask, prompt_length, config, ids)
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        visible = visible_end(config, block, canvas.shape[1])
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        span_start = block[0]
        step = 0
        while step < config.block_length and bool((canvas[:, block[0] : block[1]] == ids.mask).any()):
            if steps_left == 0:
                return denoise.output(canvas)
            if config.threshold is None and step == config.steps_per_block:
                break
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            rows = rows_to_decode(canvas, window, ids.mask)
            if step == 0:
                span_start = window[0]
                predictions = denoise.fill(canvas, window, rows, visible_end=visible)
            else:
                span = (span_start, block[1] if config.cache == "dual" else visible)
                predictions = denoise.span(canvas, window, rows, visible_end=visible, span=span)
            uniform, remask_draw = local_draws(predictions.logits, canvas.shape[0], visible, config, generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            if config.threshold is not None:
                chosen = above_threshold(confidence, config.threshold)
            else:
                chosen = top_k_per_row(confidence, counts[:, step], offset=window[0], length=visible)
            reveal(canvas, window, tokens, chosen)
            step += 1
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
    return denoise.output(canvas)


class CachedDenoiser(Denoiser):
    """The block KV cache's two passes: :meth:`fill` runs the visible canvas and keeps its keys/values; :meth:`span`
    recomputes only ``[start, end)`` against them (its rows must be among those that filled the cache)."""

    cache: KVCache | None = None
    cache_rows: torch.Tensor | None = None  # canvas rows the cache holds, in order

    def fill(
        self, canvas: torch.Tensor, window: tuple[int, int], rows: torch.Tensor, *, visible_end: int
    ) -> Predictions:
        row_index, inputs, mask = self.inputs(canvas, rows, visible_end)
        self.cache, self.cache_rows = KVCache(), row_index
        output = self.model(inputs, mask, cache=self.cache, hidden_layer=self.config.hidden_layer, logits_slice=None)
        return self.predictions(canvas, window, row_index, output)

    def span(
        self,
        canvas: torch.Tensor,
        window: tuple[int, int],
        rows: torch.Tensor,
        *,
        visible_end: int,
        span: tuple[int, int],
    ) -> Predictions:
        assert self.cache is not None, "a span pass needs a cache filled by an earlier pass"
        row_index, inputs, mask = self.inputs(canvas, rows, visible_end)
        self.cache.rows = self._cache_index(row_index)
        output = self.model(
            inputs[:, span[0] : span[1]],
            mask,
            cache=self.cache,
            span=span,
            hidden_layer=self.config.hidden_layer,
            logits_slice=None,
        )
        return self.predictions(canvas, window, row_index, output, offset=span[0])

    def _cache_index(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Positions of ``rows`` in the cache (both CFG halves), or ``None`` when the pass covers every cached row."""
        assert self.cache_rows is not None
        if len(rows) == len(self.cache_rows):
            return None
        index = torch.searchsorted(self.cache_rows, rows)
        return torch.cat((index, index + len(self.cache_rows))) if self.guided else index


def rows_to_decode(canvas: torch.Tensor, window: tuple[int, int], mask_id: int) -> torch.Tensor:
    """Rows that still have a masked position in ``window`` (the others sit this pass out)."""
    return (canvas[:, window[0] : window[1]] == mask_id).any(dim=1).nonzero().squeeze(1)


def local_draws(
    logits: torch.Tensor, batch: int, visible: int, config: LLaDASamplerConfig, generator: torch.Generator | None
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


def above_threshold(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM's parallel rule: every position with confidence ≥ τ, and always the most confident one.

    Rows whose confidences are all -inf (nothing masked) get nothing.
    """
    chosen = confidence >= threshold
    best = confidence.argmax(dim=-1, keepdim=True)
    has_candidate = torch.isfinite(confidence).any(dim=-1, keepdim=True)
    chosen.scatter_(-1, best, has_candidate | chosen.gather(-1, best))
    return chosen & torch.isfinite(confidence)
