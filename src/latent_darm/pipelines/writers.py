"""Writers: a model that turns prompt strings into text, with its cost — the one role both models can play.

Every pairing of the paper is two writers in sequence (planner then executor), and every single-model baseline is
one writer, so the pipelines never care whether a stage is diffusion or autoregressive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.sampling import SamplerConfig


@dataclass
class Written:
    """One generated text and what it cost: tokens counted as the paper does (a diffusion writer spends its whole
    canvas, ``gen_length``; an autoregressive one the tokens it generated, stop token included)."""

    text: str
    tokens: int
    forward_passes: int
    seconds: float
    truncated: bool = False  # the budget ran out before an end token (for a diffusion writer: no EOS on the canvas)


class Writer(Protocol):
    kind: str

    def write(self, prompts: Sequence[str], batch_size: int) -> list[Written]: ...

    def describe(self) -> dict[str, Any]: ...

    def render(self, prompt: str) -> str: ...


@dataclass
class DiffusionWriter:
    """A LLaDA-family model writing with the masked-diffusion sampler."""

    model: DiffusionLM
    sampler: SamplerConfig
    kind: str = "ddlm"

    def write(self, prompts: Sequence[str], batch_size: int) -> list[Written]:
        plans = self.model.generate(prompts, self.sampler, batch_size=batch_size)
        stops = {self.model.ids.eos, self.model.ids.eot}
        return [
            Written(p.text, self.sampler.gen_length, p.nfe, p.seconds, not stops.intersection(p.token_ids))
            for p in plans
        ]

    def render(self, prompt: str) -> str:
        return self.model.tokenizer.decode(self.model.prompt_ids(prompt))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model.name_or_path, "sampler": self.sampler.to_dict()}


@dataclass
class AutoregressiveWriter:
    """A Hugging Face causal LM writing greedily. ``system``: the chat's system turn ("" the paper authors' empty
    one, None none at all, which lets a template insert its own default); ``chat``: False sends plain prompts."""

    model: AutoregressiveLM
    max_new_tokens: int
    repetition_penalty: float = 1.0
    kind: str = "arm"
    system: str | None = ""
    chat: bool = True

    def write(self, prompts: Sequence[str], batch_size: int) -> list[Written]:
        outputs = self.model.generate(
            list(prompts),
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            batch_size=batch_size,
            chat=self.chat,
            system=self.system,
        )
        return [Written(g.text, len(g.token_ids), g.forward_passes, g.seconds, g.truncated) for g in outputs]

    def render(self, prompt: str) -> str:
        return self.model.rendered_prompt(prompt, chat=self.chat, system=self.system)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model.name_or_path,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
