"""The Dream pieces of ``bench/sampler.py --family dream``: a random Dream-shaped model, its modes, the naive loop.

The naive loop is the plain port of the official ``diffusion_generate`` in ``tests/reference_dream.py``, one prompt
at a time on the reference forward pass; "exact" is this package's Dream sampler (batched); the fast modes are its
threshold rule and prompt-prefix cache. Dream has no blocks (no dual cache).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

from latent_darm.models.dream.configuration import DreamConfig
from latent_darm.models.dream.modeling import DreamModel
from latent_darm.models.dream.sampler import DreamSamplerConfig, dream_generate
from latent_darm.sampling import SampleOutput, SpecialIds

REPO_ROOT = Path(__file__).resolve().parents[1]

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                 intermediate_size=384, vocab_size=4096),
    "small": dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=8,
                  intermediate_size=1536, vocab_size=32000),
    "7b": dict(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, num_hidden_layers=28,
               intermediate_size=18944, vocab_size=152064, mask_token_id=151666, eos_token_id=151643),
}  # fmt: skip


def random_config(shape: str) -> DreamConfig:
    values = dict(SHAPES[shape])
    values.setdefault("mask_token_id", values["vocab_size"] - 1)
    values.setdefault("eos_token_id", values["vocab_size"] - 2)
    return DreamConfig(max_position_embeddings=4096, pad_token_id=values["eos_token_id"], **values)


def random_std(init_std: float | None, config: DreamConfig) -> float:
    return init_std if init_std is not None else 0.2 * math.sqrt(512 / config.hidden_size)


def describe(shape: str, init_std: float | None) -> dict[str, Any]:
    config = random_config(shape)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in DreamModel(config).parameters())
    return {
        "family": "dream",
        "source": f"random Dream ({shape})",
        "init_std": random_std(init_std, config),
        "parameters": parameters,
        **config.to_dict(),
    }


def random_model(shape: str, device: torch.device, dtype: torch.dtype, seed: int, init_std: float | None) -> DreamModel:
    """Built on the meta device, filled in place: norm weights ~ 1 + 0.1·N(0, 1), the rest ~ std·N(0, 1)."""
    config = random_config(shape)
    with torch.device("meta"):
        model = DreamModel(config).to(dtype)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = random_std(init_std, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(1.0, 0.1, generator=generator)
            else:
                param.normal_(0.0, std, generator=generator)
    return model.eval()


def special_ids(model: DreamModel) -> SpecialIds:
    return SpecialIds(mask=model.config.mask_token_id, eos=model.config.eos_token_id)


def sampler_config(gen_length: int, threshold: float | None, cache: str) -> DreamSamplerConfig:
    return DreamSamplerConfig(
        gen_length=gen_length,
        steps=gen_length,
        remasking="maskgit_plus",
        threshold=threshold,
        cache=cache,  # type: ignore[arg-type]
    )


def sample(
    model: DreamModel, prompts: torch.Tensor, mask: torch.Tensor | None, config: DreamSamplerConfig, ids: SpecialIds
) -> SampleOutput:
    return dream_generate(model, prompts, mask, config, ids)


def run_naive(model: DreamModel, prompts: torch.Tensor, gen_length: int, ids: SpecialIds) -> tuple[torch.Tensor, int]:
    """The official sampler's plain port on the reference forward pass, one prompt at a time."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.reference_dream import ReferenceDream, reference_diffusion_generate

    reference = ReferenceDream(dict(model.state_dict()), model.config)
    calls = [0]

    def counted(*args: Any) -> torch.Tensor:
        calls[0] += 1
        return reference(*args)

    rows = []
    with torch.device(prompts.device):
        for row in range(prompts.shape[0]):
            out = reference_diffusion_generate(
                counted, prompts[row : row + 1], None, max_new_tokens=gen_length, mask_token_id=ids.mask,
                steps=gen_length, alg="maskgit_plus",
            )  # fmt: skip
            rows.append(out[:, prompts.shape[1] :])
    return torch.cat(rows), calls[0]
