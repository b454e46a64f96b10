"""Dream-v0 as a planner family: the official hub layout opened natively (no remote code), Dream's sampler."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError
from latent_darm.models.dream.configuration import DreamConfig, read_config
from latent_darm.models.dream.modeling import DreamModel
from latent_darm.models.dream.register import register
from latent_darm.models.dream.sampler import DreamSamplerConfig, dream_generate
from latent_darm.models.family import PlannerForward, from_pretrained_strictly
from latent_darm.models.llada.checkpoint import weight_files
from latent_darm.sampling import SampleOutput, SpecialIds

EOT_TOKEN = "<|im_end|>"  # Qwen2 chat format, Dream's end of turn


def check_tensors(directory: Path, config: DreamConfig) -> None:
    """Every tensor the config implies is in the files, with its shape, and nothing else — checked from the
    safetensors headers before loading, so a truncated or mismatched checkpoint names its tensor."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in DreamModel(config).state_dict().items()}
    files = weight_files(directory)
    missing = sorted(set(expected) - set(files))
    if missing:
        raise CheckpointError(f"{directory}: tensor '{missing[0]}' is missing ({len(missing)} missing in all)")
    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        raise CheckpointError(f"{directory}: unexpected tensor '{unexpected[0]}' (does config.json match?)")
    for path in sorted(set(files.values())):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                shape = tuple(handle.get_slice(name).get_shape())
                if name in expected and shape != expected[name]:
                    raise CheckpointError(
                        f"{path.name}: tensor '{name}' has shape {list(shape)}, config implies {list(expected[name])}"
                    )


class DreamFamily:
    name = "Dream"
    sampler_config = DreamSamplerConfig
    uses_blocks = False

    def load(
        self, directory: Path, *, dtype: torch.dtype, device: str | torch.device, strict_config: bool
    ) -> DreamModel:
        """``DreamModel.from_pretrained`` on the checked config; any missing, unexpected or misshapen tensor is an
        error (transformers would otherwise initialise it at random and only log a warning)."""
        register()
        config = read_config(directory)
        check_tensors(directory, config)
        model = from_pretrained_strictly(DreamModel, directory, config=config, dtype=dtype)
        return model.to(device).eval()

    def save(self, model: DreamModel, directory: Path) -> None:
        model.save_pretrained(directory)

    def special_ids(
        self, model: DreamModel, tokenizer: PreTrainedTokenizerBase, mask_token_id: int | None
    ) -> SpecialIds:
        mask = model.config.mask_token_id if mask_token_id is None else mask_token_id
        if tokenizer.mask_token_id is None:
            raise CheckpointError("the planner's tokenizer has no mask token (tokenizer_config.json 'mask_token')")
        if mask_token_id is None and tokenizer.mask_token_id != mask:
            raise CheckpointError(
                f"the tokenizer's mask token id {tokenizer.mask_token_id} differs from config.json mask_token_id {mask}"
            )
        eot = tokenizer.get_vocab().get(EOT_TOKEN)
        return SpecialIds(mask=mask, eos=model.config.eos_token_id, eot=eot)

    def hidden_size(self, model: DreamModel) -> int:
        return model.config.hidden_size

    def num_layers(self, model: DreamModel) -> int:
        return model.config.num_hidden_layers

    def forward(
        self,
        model: DreamModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ) -> PlannerForward:
        """Dream scores position i from row i − 1; undo that shift (position 0 reuses row 0, as the official code)."""
        out = model(input_ids, attention_mask, position_ids)
        assert out.logits is not None
        logits = torch.cat((out.logits[:, :1], out.logits[:, :-1]), dim=1)
        return PlannerForward(logits, out.last_hidden_state if output_hidden else None)

    def sample(
        self,
        model: DreamModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: DreamSamplerConfig,
        ids: SpecialIds,
        generator: torch.Generator | None,
    ) -> SampleOutput:
        return dream_generate(model, input_ids, attention_mask, config, ids, generator)


FAMILY = DreamFamily()
