"""The diffusion planner: a checkpoint of any registered planner family plus its tokenizer, from prompt strings to
plans and latents. Family-specific work (network, checkpoint layout, special ids, sampler) lives in the family
(``latent_darm.models.family``); this class only batches, pads and decodes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.chat import render_chat
from latent_darm.models.family import (
    PlannerFamily,
    PlannerForward,
    family_of_directory,
    family_of_model,
    sampler_config,
)
from latent_darm.models.hub import resolve_checkpoint
from latent_darm.sampling import SampleOutput, SamplerConfig


@dataclass
class Plan:
    """One sampled plan. ``seconds`` is the batch's wall time shared equally among its rows; ``latents`` [G, d]
    are the chosen layer's hidden states at the generated positions (when the sampler was asked for them)."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    nfe: int
    seconds: float
    latents: torch.Tensor | None = None


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """AutoTokenizer without remote code; quiet about the config's model type transformers may not know."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: no usable tokenizer ({str(exc).splitlines()[0]})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)


class DiffusionLM:
    """A planner family's model + tokenizer + special ids; samples plans in batches with left padding."""

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name_or_path: str = "",
        mask_token_id: int | None = None,
        family: PlannerFamily | None = None,
    ) -> None:
        self.model, self.tokenizer, self.name_or_path = model, tokenizer, name_or_path
        vocabulary = getattr(model.config, "embedding_size", None) or getattr(model.config, "vocab_size", None)
        if mask_token_id is not None and vocabulary and not 0 <= mask_token_id < vocabulary:
            raise ConfigError(
                f"mask token id {mask_token_id} is outside the planner's vocabulary (0..{vocabulary - 1})"
            )
        self.family = family_of_model(model) if family is None else family
        self.ids = self.family.special_ids(model, tokenizer, mask_token_id)
        stops = {"EOS": self.ids.eos, "end-of-turn": self.ids.eot}
        clash = next((name for name, token in stops.items() if token == self.ids.mask), None)
        if clash is not None:
            # The sampler would read every still-masked position as the end of the plan.
            raise ConfigError(
                f"mask token id {self.ids.mask} equals the {clash} token id; give another --mask-token-id"
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.ids.eos
        if pad == self.ids.mask:
            raise ConfigError(f"the tokenizer's pad token id {pad} equals the mask token id; set another pad token")
        self.pad_token_id = pad

    @classmethod
    def from_pretrained(
        cls,
        reference: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        mask_token_id: int | None = None,
        strict_config: bool = True,
    ) -> DiffusionLM:
        """Open a published checkpoint directory (or hub id) as it is; its ``model_type`` picks the family."""
        directory = resolve_checkpoint(reference, "planner")
        family = family_of_directory(directory)
        model = family.load(directory, dtype=dtype, device=device, strict_config=strict_config)
        tokenizer = load_tokenizer(directory)
        return cls(model, tokenizer, name_or_path=str(reference), mask_token_id=mask_token_id, family=family)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.family.save(self.model, directory)
        self.tokenizer.save_pretrained(directory)

    def sampler_config(self, **options: Any) -> SamplerConfig:
        """Sampler settings for this planner's family; ``None`` options take the family's defaults."""
        return sampler_config(self.family, **options)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ) -> PlannerForward:
        """Logits aligned to the positions they score (and final-norm hidden states on request)."""
        return self.family.forward(self.model, input_ids, attention_mask, position_ids, output_hidden)

    @property
    def hidden_size(self) -> int:
        return self.family.hidden_size(self.model)

    @property
    def num_layers(self) -> int:
        return self.family.num_layers(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prompt_ids(self, prompt: str, chat: bool = True) -> list[int]:
        """Token ids of one prompt: inside the chat template (with the assistant header) or raw, no specials."""
        if chat:
            if self.tokenizer.chat_template is None:
                raise ConfigError(f"planner {self.name_or_path!r} has no chat template; use --no-chat")
            text = render_chat(self.tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        else:
            text = prompt
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, P] ids and attention mask, padded on the left as the reference sampler expects."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def sample(
        self, rows: Sequence[Sequence[int]], config: SamplerConfig, generator: torch.Generator | None = None
    ) -> SampleOutput:
        """One batch through the sampler; rows are prompt token ids."""
        if not isinstance(config, self.family.sampler_config):
            raise ConfigError(f"a {type(config).__name__} is not a {self.family.name} sampler config")
        ids, mask = self.left_pad(rows)
        return self.family.sample(self.model, ids, mask, config, self.ids, generator)

    def decode_plan(self, token_ids: Sequence[int]) -> str:
        """Text of the plan up to its first EOS/EoT, without special tokens."""
        stops = {self.ids.eos, self.ids.eot}
        cut = next((i for i, t in enumerate(token_ids) if t in stops), len(token_ids))
        return self.tokenizer.decode(list(token_ids[:cut]), skip_special_tokens=True).strip()

    def generate(
        self,
        prompts: Sequence[str],
        config: SamplerConfig,
        *,
        chat: bool = True,
        batch_size: int = 8,
        generator: torch.Generator | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Plan]:
        """Plans for ``prompts`` in input order. Prompts of similar length share a batch (less padding)."""
        if not prompts:
            return []
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        encoded = [self.prompt_ids(p, chat) for p in prompts]
        for i, row in enumerate(encoded):
            if not row:
                raise ConfigError(f"prompt {i} is empty after tokenization")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        plans: list[Plan | None] = [None] * len(encoded)
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            started = time.perf_counter()
            out = self.sample([encoded[i] for i in batch], config, generator)
            seconds = (time.perf_counter() - started) / len(batch)
            for row, index in enumerate(batch):
                tokens = out.generated[row].tolist()
                latents = None if out.hidden is None else out.hidden[row]
                plans[index] = Plan(
                    encoded[index], tokens, self.decode_plan(tokens), int(out.row_nfe[row]), seconds, latents
                )
            if on_batch is not None:
                on_batch(len(batch))
        return [p for p in plans if p is not None]
