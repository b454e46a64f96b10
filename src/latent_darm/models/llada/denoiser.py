"""One evaluation of LLaDA's mask predictor on the canvas, for every sampling strategy.

The :class:`Denoiser` owns what surrounds the network call — classifier-free guidance, the rows still being
decoded, a cut canvas or held columns (``lookahead``), the LM head at the masked positions only, capture of the
plan latents, and the forward-pass counts — so each strategy stays a short loop that reads like the reference.
The block KV cache's passes are :class:`~latent_darm.models.llada.fast_sampler.CachedDenoiser`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SampleOutput, SpecialIds


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
        config: LLaDASamplerConfig,
        ids: SpecialIds,
    ) -> None:
        self.model, self.config, self.ids = model, config, ids
        self.prompt_length = prompt_length
        self.batch = canvas.shape[0]
        self.guided = config.cfg_scale > 0
        # CFG's unconditional branch sees every prompt position (pads included) replaced by the mask, as the reference.
        self.prompt_index = canvas != ids.mask
        self.attention_mask = attention_mask
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
    ) -> Predictions:
        """Logits at the masked positions of ``window`` for the canvas ``rows`` (all rows when ``None``).

        ``visible_end`` truncates the canvas (fewer masked positions in the pass); ``columns`` (sorted canvas
        positions, all of ``[0, window end)`` among them) runs only those, at their true position ids.
        """
        row_index, inputs, mask = self.inputs(canvas, rows, visible_end, columns)
        output = self.model(
            inputs, mask, hidden_layer=self.config.hidden_layer, logits_slice=None, position_ids=columns
        )
        return self.predictions(canvas, window, row_index, output, columns=columns)

    def inputs(
        self,
        canvas: torch.Tensor,
        rows: torch.Tensor | None,
        visible_end: int | None,
        columns: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The rows a pass computes, its input ids (an unconditional copy appended under CFG) and attention mask."""
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
        return row_index, inputs, mask

    def predictions(
        self,
        canvas: torch.Tensor,
        window: tuple[int, int],
        row_index: torch.Tensor,
        output: Any,
        *,
        offset: int = 0,
        columns: torch.Tensor | None = None,
    ) -> Predictions:
        """The LM head at the window's masked positions (guided under CFG); counts the pass and keeps its latents.
        ``offset``: the canvas position of the output's first column (a span pass)."""
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
