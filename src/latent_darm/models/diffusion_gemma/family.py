"""DiffusionGemma (google/diffusiongemma-*) as a planner family, through ``transformers.models.diffusion_gemma``.

Nothing is ported: loading is ``DiffusionGemmaForBlockDiffusion.from_pretrained`` and sampling is the model's own
``generate`` (block diffusion over canvases of ``config.canvas_length`` tokens, uniform-noise canvases, entropy-bound
acceptance, self-conditioning). Its randomness comes from torch's global RNG; we seed it from the caller's generator
inside a forked RNG state, so a seeded run repeats and leaves the caller's RNG untouched.

**Plan latents.** The decoder's hidden states depend on the self-conditioning logits of the previous denoising
step and on a canvas that is partly noise, so "the last forward pass" is not one well-defined thing. We define the
plan latents as the *encoder's* final-norm hidden states over ``prompt + plan``, at the plan positions: the clean
representation of the finished plan that DiffusionGemma itself feeds (as its KV cache) to the next canvas. It
costs one encoder pass after sampling. Only ``hidden_layer=-1`` (after the final norm) is offered.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.io import read_json_file
from latent_darm.models.config_checks import check_hf_config
from latent_darm.models.family import PlannerForward, from_pretrained_strictly
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds

NO_MASK = -1  # DiffusionGemma denoises uniform-noise canvases: it has no mask token
EOT_TOKEN = "<end_of_turn>"


class DiffusionGemmaFamily:
    name = "DiffusionGemma"
    remasking = ("entropy_bound",)
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

    def plan_latents(
        self, model: DiffusionGemmaForBlockDiffusion, sequences: torch.Tensor, mask: torch.Tensor, prompt_length: int
    ) -> torch.Tensor:
        """Encoder final-norm hidden states [B, G, d] at the plan positions of ``prompt + plan``."""
        out = model.model.encoder(input_ids=sequences, attention_mask=mask)
        return out.last_hidden_state[:, prompt_length:]

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

    def check(self, config: SamplerConfig) -> None:
        if config.remasking not in self.remasking:
            raise ConfigError(f"remasking {config.remasking!r} is not known to DiffusionGemma; valid: entropy_bound")
        unsupported = {
            "threshold": config.threshold is not None,
            "cache": config.cache != "none",
            "cfg_scale": config.cfg_scale != 0,
            "early_stop": config.early_stop,
            "lookahead": config.lookahead is not None,
            "latent_tokens": config.latent_tokens is not None,
            "top_p": config.top_p is not None,
            "top_k": config.top_k is not None,
            "alg_temp": config.alg_temp is not None,
            "temperature": config.temperature != 0,
            "denoise_fraction": config.denoise_fraction != 1.0,
        }
        for name, used in unsupported.items():
            if used:
                raise ConfigError(f"{name} is not a DiffusionGemma setting (it samples with its own generate)")
        if config.hidden_layer not in (None, -1):
            raise ConfigError("DiffusionGemma plan latents exist only after the final norm (hidden_layer -1)")

    @torch.no_grad()
    def sample(
        self,
        model: DiffusionGemmaForBlockDiffusion,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: SamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput:
        """``generate`` with ``max_new_tokens = gen_length`` and ``max_denoising_steps = steps`` per canvas."""
        seed = 0 if generator is None else generator.initial_seed()
        devices = [input_ids.device] if input_ids.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
            out = model.generate(
                input_ids, max_new_tokens=config.gen_length, max_denoising_steps=config.steps, **kwargs
            )
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
                else torch.cat(
                    (attention_mask, attention_mask.new_ones((sequences.shape[0], config.gen_length))), dim=1
                )
            )
            hidden = self.plan_latents(model, sequences, mask, prompt_length)
        # generate reports tokens per decoder pass per row (non-pad tokens / passes); recover the passes from it.
        pad = model.generation_config.pad_token_id
        new = out.sequences[:, prompt_length:]
        valid = (new != pad).sum(-1) if pad is not None else torch.full((new.shape[0],), new.shape[1])
        row_nfe = (valid / out.tokens_per_forward).round().long().cpu()
        return SampleOutput(sequences, prompt_length, int(row_nfe.max()), row_nfe, hidden)


FAMILY = DiffusionGemmaFamily()
