"""LLaDA as a planner family: the native checkpoint reader, the block sampler in ``latent_darm.sampling``."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from latent_darm.errors import ConfigError
from latent_darm.models.family import PlannerForward
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.sampling import SampleOutput, SamplerConfig, SpecialIds, diffusion_generate

EOT_TOKENS = ("<|eot_id|>", "<|im_end|>")


class LLaDAFamily:
    name = "LLaDA"
    remasking = ("low_confidence", "random")
    uses_blocks = True

    def load(
        self, directory: Path, *, dtype: torch.dtype, device: str | torch.device, strict_config: bool
    ) -> LLaDAModelLM:
        return load_llada(directory, dtype=dtype, device=device, strict_config=strict_config)

    def save(self, model: LLaDAModelLM, directory: Path) -> None:
        save_llada(model, directory)

    def special_ids(
        self, model: LLaDAModelLM, tokenizer: PreTrainedTokenizerBase, mask_token_id: int | None
    ) -> SpecialIds:
        eot = next((tokenizer.convert_tokens_to_ids(t) for t in EOT_TOKENS if t in tokenizer.get_vocab()), None)
        mask = model.config.mask_token_id if mask_token_id is None else mask_token_id
        return SpecialIds(mask=mask, eos=model.config.eos_token_id, eot=eot)

    def hidden_size(self, model: LLaDAModelLM) -> int:
        return model.config.d_model

    def num_layers(self, model: LLaDAModelLM) -> int:
        return model.config.n_layers

    def forward(
        self,
        model: LLaDAModelLM,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ) -> PlannerForward:
        """LLaDA scores each position from its own row: no shift."""
        out = model(input_ids, attention_mask, hidden_layer=-1 if output_hidden else None, position_ids=position_ids)
        assert out.logits is not None
        return PlannerForward(out.logits, out.hidden)

    def check(self, config: SamplerConfig) -> None:
        if config.remasking not in self.remasking:
            raise ConfigError(
                f"remasking {config.remasking!r} is not known to LLaDA; valid: {', '.join(self.remasking)}"
            )
        for name in ("top_p", "top_k", "alg_temp"):
            if getattr(config, name) is not None:
                raise ConfigError(f"{name} is a Dream sampler setting; LLaDA's sampler does not use it")

    def sample(
        self,
        model: LLaDAModelLM,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: SamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput:
        return diffusion_generate(model, input_ids, attention_mask, config, ids, generator)


FAMILY = LLaDAFamily()
