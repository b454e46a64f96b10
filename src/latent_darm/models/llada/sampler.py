"""LLaDA's reverse process exactly as ML-GSAI/LLaDA ``generate.py`` runs it, batched; its helpers below it.

Semi-autoregressive blocks; in each block a fixed number of steps, each revealing the scheduled number of the
most confident masked positions. The departures cannot change the result: logits are computed only at the
masked positions that can be revealed (the current block, plus any earlier position still masked because the
model proposed the mask token there), and the softmax runs in float32. Random draws (Gumbel noise over the whole
canvas, then the random-remasking draw) are made as the reference makes them, so a seeded run gives its tokens.

Latents: each position's hidden state from the last forward pass, an uncached pass over the canvas as it was
before the last step. Two knobs keep the same loop: ``lookahead`` (each pass holds only n of the masked positions
after the block, at their true positions) and ``early_stop`` (after an all-EOS block the rest of the row is EOS;
once no row has a mask left, no further pass runs). The fast modes (``fast_sampler.py``) reuse these helpers;
:func:`llada_generate` picks the strategy the config asks for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latent_darm.errors import ConfigError
from latent_darm.models.llada.denoiser import Denoiser, Predictions
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SampleOutput, SpecialIds


def llada_generate(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: LLaDASamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` masks after the left-padded prompts ``input_ids`` [B, P]: the cache mode first,
    then τ, else exact mode."""
    from latent_darm.models.llada import fast_sampler  # built from this module's helpers, so imported here

    if config.cache != "none":
        return fast_sampler.generate_cached(model, input_ids, attention_mask, config, ids, generator)
    if config.threshold is not None:
        return fast_sampler.generate_threshold(model, input_ids, attention_mask, config, ids, generator)
    return generate_exact(model, input_ids, attention_mask, config, ids, generator)


@torch.no_grad()
def generate_exact(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: LLaDASamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` masks after the left-padded prompts ``input_ids`` [B, P]."""
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    length = canvas.shape[1]
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        for step in range(config.steps_per_block):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            visible = visible_end(config, block, length)
            columns = held_columns(config, block, visible, canvas.device, generator)
            predictions = denoise(canvas, window, visible_end=visible, columns=columns)
            uniform, remask_draw = reference_draws(predictions, window, canvas, config, generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            chosen = top_k_per_row(confidence, counts[:, step], offset=window[0], length=length)
            reveal(canvas, window, tokens, chosen)
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
            if not bool((canvas[:, prompt_length:] == ids.mask).any()):
                break
    return denoise.output(canvas)


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


def blocks(config: LLaDASamplerConfig, prompt_length: int) -> list[tuple[int, int]]:
    """Canvas ranges of the semi-autoregressive blocks, left to right."""
    starts = range(prompt_length, prompt_length + config.gen_length, config.block_length)
    return [(start, start + config.block_length) for start in starts]


def num_transfer_tokens(block_masks: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to reveal at each step of a block under the linear schedule: [B, steps] (int64).

    ``block_masks`` [B, L] marks masked positions of the block. With n masks, every step reveals n // steps
    and the first n % steps steps one more, so the block is fully revealed after ``steps`` steps.
    """
    n = block_masks.sum(dim=1, keepdim=True)
    base, remainder = n // steps, n % steps
    step_index = torch.arange(steps, device=block_masks.device)[None, :]
    return base + (step_index < remainder).long()


def candidate_window(canvas: torch.Tensor, block: tuple[int, int], prompt_length: int, mask_id: int) -> tuple[int, int]:
    """Canvas positions that may be revealed now: the block, widened left to any still-masked earlier position.

    Earlier blocks keep a mask only when the model proposed the mask token itself; the reference then lets that
    position compete again in later blocks, so we do too.
    """
    leftover = (canvas[:, prompt_length : block[0]] == mask_id).any(dim=0).nonzero()
    start = prompt_length + int(leftover[0]) if len(leftover) else block[0]
    return start, block[1]


def visible_end(config: LLaDASamplerConfig, block: tuple[int, int], length: int) -> int:
    """End of the canvas a pass sees: everything, or (``lookahead``, nearest) n masked positions after the block."""
    if config.lookahead is None or config.lookahead_choice != "nearest":
        return length
    return min(length, block[1] + config.lookahead)


def held_columns(
    config: LLaDASamplerConfig,
    block: tuple[int, int],
    length: int,
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor | None:
    """``lookahead`` drawn at random: the canvas columns a pass holds — everything up to the block's end, then n of
    the masked positions after it, drawn uniformly — or ``None`` for the whole (visible) canvas."""
    if config.lookahead is None or config.lookahead_choice != "random":
        return None
    after = length - block[1]
    n = min(config.lookahead, after)
    if n == after:
        chosen = torch.arange(block[1], block[1] + n, device=device)
    else:
        chosen = block[1] + torch.randperm(after, generator=generator, device=device)[:n].sort().values
    return torch.cat((torch.arange(block[1], device=device), chosen))


def reference_draws(
    predictions: Predictions,
    window: tuple[int, int],
    canvas: torch.Tensor,
    config: LLaDASamplerConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The reference's random draws, in its order: Gumbel noise (temperature > 0; at the predicted positions, see
    :func:`reference_uniform`), then the random-remasking draw over the whole canvas [B, T]."""
    uniform = None
    if config.temperature > 0:
        uniform = reference_uniform(predictions, window, canvas.shape, canvas.device, generator)
    remask_draw = None
    if config.remasking == "random":
        remask_draw = torch.rand(canvas.shape, device=canvas.device, generator=generator)
    return uniform, remask_draw


def reference_uniform(
    predictions: Predictions,
    window: tuple[int, int],
    canvas_shape: torch.Size | tuple[int, int],
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


def pick(
    predictions: Predictions,
    canvas: torch.Tensor,
    window: tuple[int, int],
    config: LLaDASamplerConfig,
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


def gumbel_argmax(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Sample token ids [...] from logits [..., V]; temperature 0 is the plain argmax.

    Gumbel-max in float64 as the reference does it: argmax of exp(l) / (-log u)^T, which is argmax of
    l/T + Gumbel noise. Low precision here is known to hurt generation quality (arXiv:2409.02908). ``uniform`` is
    the noise u (float64, same shape as ``logits``); the caller draws it so it can reproduce the reference's draws.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    assert uniform is not None, "temperature > 0 needs uniform noise"
    return (logits.to(torch.float64).exp() / (-torch.log(uniform)) ** temperature).argmax(dim=-1)


def token_confidence(logits: torch.Tensor, tokens: torch.Tensor, excluded_ids: tuple[int, ...] = ()) -> torch.Tensor:
    """Softmax probability [...] of ``tokens`` under ``logits`` [..., V], computed in float32.

    ``excluded_ids`` get probability zero and the rest are renormalised: what the reference's
    ``confidence_eos_eot_inf`` does (it sets those logits to -inf before the softmax), so EOS/EoT are revealed last.
    """
    scores = logits.float()
    if excluded_ids:
        scores = scores.clone()
        scores[..., list(excluded_ids)] = -torch.inf
    probs = F.softmax(scores, dim=-1)
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def top_k_per_row(
    confidence: torch.Tensor, k: torch.Tensor, offset: int = 0, length: int | None = None
) -> torch.Tensor:
    """Boolean [B, W] marking the ``k[b]`` most confident positions of each row of the window ``confidence``.

    The reference runs ``topk`` on a whole-canvas row that is -inf outside the candidates, and ``topk`` breaks
    ties (e.g. confidences of exactly 0 when EOS/EoT are excluded) by position in the tensor it is given. So the
    window, which starts at canvas position ``offset``, is placed in a -inf row of the canvas ``length`` first:
    the same tensor as the reference's, hence the same choice.
    """
    batch, width = confidence.shape
    length = offset + width if length is None else length
    canvas_row = confidence.new_full((batch, length), -torch.inf)
    canvas_row[:, offset : offset + width] = confidence
    chosen = torch.zeros_like(canvas_row, dtype=torch.bool)
    for row in range(batch):
        count = int(k[row])
        if count > 0:
            chosen[row, torch.topk(canvas_row[row], k=count).indices] = True
    return chosen[:, offset : offset + width]


def reveal(canvas: torch.Tensor, window: tuple[int, int], tokens: torch.Tensor, chosen: torch.Tensor) -> None:
    """Write the chosen candidate tokens into the canvas window, in place."""
    current = canvas[:, window[0] : window[1]]
    canvas[:, window[0] : window[1]] = torch.where(chosen, tokens, current)


def fill_after_eos_blocks(canvas: torch.Tensor, block: tuple[int, int], ids: SpecialIds) -> None:
    """``early_stop``: a row whose finished block is all EOS gets EOS everywhere after it."""
    finished = (canvas[:, block[0] : block[1]] == ids.eos).all(dim=1)
    canvas[finished, block[1] :] = ids.eos
