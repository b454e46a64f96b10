"""DiffusionGemma (google/diffusiongemma-*) as a planner family, through ``transformers.models.diffusion_gemma``.

Nothing is ported: loading is ``DiffusionGemmaForBlockDiffusion.from_pretrained`` and sampling is the model's own
``generate`` (block diffusion over canvases of ``config.canvas_length`` tokens, uniform-noise canvases, entropy-bound
acceptance, self-conditioning). Its randomness comes from torch's global RNG; we seed it from the caller's generator
inside a forked RNG state, so a seeded run repeats and leaves the caller's RNG untouched.

Sampling and the plan latents: ``sampler.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.io import read_json_file
from latent_darm.models.config_checks import check_hf_config
from latent_darm.models.diffusion_gemma.sampler import DiffusionGemmaSamplerConfig, gemma_generate
from latent_darm.models.family import PlannerForward, from_pretrained_strictly
from latent_darm.sampling import SampleOutput, SpecialIds

NO_MASK = -1  # DiffusionGemma denoises uniform-noise canvases: it has no mask token
EOT_TOKEN = "<end_of_turn>"


class DiffusionGemmaFamily:
    name = "DiffusionGemma"
    sampler_config = DiffusionGemmaSamplerConfig
    uses_blocks = False  # its canvas length is part of the checkpoint (config.canvas_length)

    def load(
        self, directory: Path, *, dtype: torch.dtype, device: str | torch.device, strict_config: bool
    ) -> DiffusionGemmaForBlockDiffusion:
        raw = read_json_file(directory / "config.json", CheckpointError)
        if isinstance(raw, dict):  # transformers says what else is wrong with it
            check_hf_config(raw, str(directory / "config.json"))
        model = from_pretrained_strictly(DiffusionGemmaForBlockDiffusion, directory, dtype=dtype)
        return model.to(device).eval()

    def save(self, model: DiffusionGemmaForBlockDiffusion, directory: Path) -> None:
        model.save_pretrained(directory)

    def special_ids(
        self, model: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase, mask_token_id: int | None
    ) -> SpecialIds:
        if mask_token_id is not None:
            raise ConfigError("DiffusionGemma has no mask token; do not pass mask_token_id")
        eos = model.config.text_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        eot = tokenizer.get_vocab().get(EOT_TOKEN)
        return SpecialIds(mask=NO_MASK, eos=tokenizer.eos_token_id if eos is None else eos, eot=eot)

    def hidden_size(self, model: DiffusionGemmaForBlockDiffusion) -> int:
        return model.config.text_config.hidden_size

    def num_layers(self, model: DiffusionGemmaForBlockDiffusion) -> int:
        return model.config.text_config.num_hidden_layers

    def forward(
        self,
        model: DiffusionGemmaForBlockDiffusion,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ) -> PlannerForward:
        """The last ``canvas_length`` columns are the canvas, the rest its context: logits [B, C, V] score the
        canvas positions themselves (no shift); ``hidden`` are the decoder's final-norm states of the canvas."""
        canvas = model.config.canvas_length
        if input_ids.shape[1] <= canvas:
            raise ConfigError(f"DiffusionGemma's forward needs context before its {canvas}-token canvas")
        context, noisy = input_ids[:, :-canvas], input_ids[:, -canvas:]
        if position_ids is not None:
            raise ConfigError("position_ids are not supported by the DiffusionGemma forward")
        mask = None if attention_mask is None else attention_mask[:, :-canvas]
        decoder_mask = None if attention_mask is None else attention_mask.bool()
        start = context.shape[1]
        out = model(
            input_ids=context,
            attention_mask=mask,
            decoder_input_ids=noisy,
            decoder_attention_mask=decoder_mask,
            position_ids=torch.arange(start, device=input_ids.device)[None],
            decoder_position_ids=torch.arange(start, start + canvas, device=input_ids.device)[None],
            output_hidden_states=output_hidden,
        )
        hidden = out.hidden_states[-1] if output_hidden and out.hidden_states else None
        return PlannerForward(out.logits, hidden)

    def sample(
        self,
        model: DiffusionGemmaForBlockDiffusion,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: DiffusionGemmaSamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput:
        return gemma_generate(model, input_ids, attention_mask, config, ids, generator)


FAMILY = DiffusionGemmaFamily()
