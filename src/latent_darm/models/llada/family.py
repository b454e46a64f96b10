"""LLaDA as a planner family: the native checkpoint reader, the block sampler beside it (``sampler.py``)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from latent_darm.models.family import PlannerForward
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.llada.sampler import llada_generate
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SampleOutput, SpecialIds

EOT_TOKENS = ("<|eot_id|>", "<|im_end|>")


class LLaDAFamily:
    name = "LLaDA"
    sampler_config = LLaDASamplerConfig
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

    def sample(
        self,
        model: LLaDAModelLM,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: LLaDASamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput:
        return llada_generate(model, input_ids, attention_mask, config, ids, generator)


FAMILY = LLaDAFamily()
