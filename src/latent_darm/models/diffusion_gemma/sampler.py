"""DiffusionGemma's sampling: the model's own ``generate`` (its settings) and the plan latents after it.

**Plan latents.** The decoder's hidden states depend on the self-conditioning logits of the previous denoising
step and on a canvas that is partly noise, so "the last forward pass" is not one well-defined thing. We define the
plan latents as the *encoder's* final-norm hidden states over ``prompt + plan``, at the plan positions: the clean
representation of the finished plan that DiffusionGemma itself feeds (as its KV cache) to the next canvas. It
costs one encoder pass after sampling. Only ``hidden_layer=-1`` (after the final norm) is offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from latent_darm.errors import ConfigError
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds


@dataclass(frozen=True)
class DiffusionGemmaSamplerConfig(SamplerConfig):
    """``generate`` with ``max_new_tokens = gen_length`` and ``max_denoising_steps = steps`` per canvas; its
    acceptance rule (``remasking``) is entropy-bound, the only one it has."""

    family: ClassVar[str] = "DiffusionGemma"

    remasking: Literal["entropy_bound"] = "entropy_bound"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_steps_fit()
        self.check_choice("remasking", ("entropy_bound",))
        if self.hidden_layer not in (None, -1):
            raise ConfigError("DiffusionGemma plan latents exist only after the final norm (hidden_layer -1)")


@torch.no_grad()
def gemma_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: DiffusionGemmaSamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` positions after the left-padded prompts ``input_ids`` [B, P]. Its randomness comes
    from torch's global RNG, seeded from ``generator`` inside a forked RNG state (a seeded run repeats and leaves
    the caller's RNG untouched)."""
    seed = 0 if generator is None else generator.initial_seed()
    devices = [input_ids.device] if input_ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        out = model.generate(input_ids, max_new_tokens=config.gen_length, max_denoising_steps=config.steps, **kwargs)
    prompt_length = input_ids.shape[1]
    sequences = out.sequences[:, : prompt_length + config.gen_length]
    if sequences.shape[1] < prompt_length + config.gen_length:  # every row stopped early: pad the rest
        pad = model.config.text_config.pad_token_id or ids.eos
        sequences = torch.nn.functional.pad(
            sequences, (0, prompt_length + config.gen_length - sequences.shape[1]), value=pad
        )
    hidden = None
    if config.hidden_layer is not None:
        mask = (
            torch.ones_like(sequences)
            if attention_mask is None
            else torch.cat((attention_mask, attention_mask.new_ones((sequences.shape[0], config.gen_length))), dim=1)
        )
        hidden = plan_latents(model, sequences, mask, prompt_length)
    # generate reports tokens per decoder pass per row (non-pad tokens / passes); recover the passes from it.
    pad = model.generation_config.pad_token_id
    new = out.sequences[:, prompt_length:]
    valid = (new != pad).sum(-1) if pad is not None else torch.full((new.shape[0],), new.shape[1])
    row_nfe = (valid / out.tokens_per_forward).round().long().cpu()
    return SampleOutput(sequences, prompt_length, int(row_nfe.max()), row_nfe, hidden)


def plan_latents(model: Any, sequences: torch.Tensor, mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Encoder final-norm hidden states [B, G, d] at the plan positions of ``prompt + plan``."""
    out = model.model.encoder(input_ids=sequences, attention_mask=mask)
    return out.last_hidden_state[:, prompt_length:]
