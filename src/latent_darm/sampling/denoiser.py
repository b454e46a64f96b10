"""One evaluation of the mask predictor on the canvas, shared by every sampling strategy.

It owns what surrounds the network call — classifier-free guidance, the block KV cache, logits for the current
block only, capture of the plan latents, and the forward-pass count — so the samplers stay short loops.
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
    latents (for each generated position, from the last forward pass that computed it); ``nfe`` network
    evaluations of the batch (a CFG step counts two); ``row_nfe`` [B] evaluations while each row still had masks."""

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


class Denoiser:
    """Evaluates the model on a canvas and returns logits only where tokens can be revealed."""

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
        if self.guided and attention_mask is not None:
            self.attention_mask = torch.cat((attention_mask, attention_mask), dim=0)
        self.cache: KVCache | None = None
        self.nfe = 0
        self.row_nfe = torch.zeros(self.batch, dtype=torch.long)
        self.hidden: torch.Tensor | None = None

    def __call__(
        self,
        canvas: torch.Tensor,
        window: tuple[int, int],
        *,
        visible_end: int | None = None,
        span: tuple[int, int] | None = None,
        fill_cache: bool = False,
    ) -> torch.Tensor:
        """Logits [B, L, V] for the canvas positions ``window``.

        ``visible_end`` truncates the canvas (fewer look-ahead masks in the pass); ``fill_cache`` runs the full
        visible canvas and keeps its keys/values; ``span`` then recomputes only ``[start, end)`` against them.
        """
        end_visible = canvas.shape[1] if visible_end is None else visible_end
        inputs = canvas[:, :end_visible]
        if self.guided:
            unconditional = inputs.masked_fill(self.prompt_index[:, :end_visible], self.ids.mask)
            inputs = torch.cat((inputs, unconditional), dim=0)
        mask = None if self.attention_mask is None else self.attention_mask[:, :end_visible]
        offset = 0
        if span is not None:
            offset = span[0]
            inputs = inputs[:, span[0] : span[1]]
        if fill_cache:
            self.cache = KVCache()
        output = self.model(
            inputs,
            mask,
            cache=self.cache if (fill_cache or span is not None) else None,
            span=span,
            hidden_layer=self.config.hidden_layer,
            logits_slice=slice(window[0] - offset, window[1] - offset),
        )
        active = (canvas[:, self.prompt_length :] == self.ids.mask).any(dim=1).cpu()
        evaluations = 2 if self.guided else 1
        self.nfe += evaluations
        self.row_nfe += active.long() * evaluations
        if output.hidden is not None:
            self._keep_hidden(output.hidden[: self.batch], offset)
        logits = output.logits
        assert logits is not None
        if self.guided:
            conditional, unconditional = logits.chunk(2, dim=0)
            logits = unconditional + (self.config.cfg_scale + 1) * (conditional - unconditional)
        return logits

    def _keep_hidden(self, hidden: torch.Tensor, offset: int) -> None:
        """Store the hidden states of the generated positions this pass computed."""
        if self.hidden is None:
            gen_length = self.config.gen_length
            self.hidden = hidden.new_zeros((self.batch, gen_length, hidden.shape[-1]))
        first = max(offset, self.prompt_length)
        last = offset + hidden.shape[1]
        if last > first:
            self.hidden[:, first - self.prompt_length : last - self.prompt_length] = hidden[:, first - offset :]

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


def propose(
    logits: torch.Tensor,
    block_tokens: torch.Tensor,
    block: tuple[int, int],
    canvas_length: int,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate tokens and their confidence in the window ``block``: ([B, L] ids, [B, L] confidence, -inf where
    unmasked)."""
    if config.logits_eos_inf:
        logits = logits.clone()
        logits[..., ids.eos] = -torch.inf
    x0 = gumbel_argmax(logits, config.temperature, generator)
    if config.remasking == "low_confidence":
        excluded = (ids.eos,) + ((ids.eot,) if ids.eot is not None else ()) if config.confidence_eos_eot_inf else ()
        confidence = token_confidence(logits, x0, excluded)
    else:
        # Drawn over the whole canvas, as the reference does, so a seeded run reproduces its choices.
        draw = torch.rand((logits.shape[0], canvas_length), device=logits.device, generator=generator)
        confidence = draw[:, block[0] : block[1]]
    masked = block_tokens == ids.mask
    x0 = torch.where(masked, x0, block_tokens)
    confidence = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
    return x0, confidence
