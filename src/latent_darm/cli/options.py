"""Option groups: a set of ``darm`` options written once, as a dataclass whose fields have ``typer.Option``
defaults, and used by every command that takes them (``darm eval`` and ``darm solve`` share
:class:`PipelineOptions`).

A command names the group as one parameter annotated with the dataclass; :func:`with_option_groups` shows typer one
parameter per field instead and hands the command the filled dataclass. Such a dataclass is a declaration for the
command line only: its defaults are typer's, so code builds specs from it through the command, never by calling it
with defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.choices import Cache, ChatTemplate, Dtype
from latent_darm.cli.common import LOOKAHEAD_CHOICE_HELP, LOOKAHEAD_HELP, PLACEMENT_HELP, lookahead_options
from latent_darm.pipelines.builder import build_spec

F = typing.TypeVar("F", bound=Callable[..., Any])


def with_option_groups(command: F) -> F:
    """``command`` with each parameter annotated with an option-group dataclass replaced, for typer, by the group's
    fields (in field order, where the parameter stood); on call the fields are gathered back into the dataclass."""
    hints = typing.get_type_hints(command)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for parameter in inspect.signature(command).parameters.values():
        group = hints.get(parameter.name)
        if isinstance(group, type) and dataclasses.is_dataclass(group):
            field_hints = typing.get_type_hints(group)
            names = [f.name for f in dataclasses.fields(group)]
            groups[parameter.name] = (group, names)
            parameters += [
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=field_hints[f.name]
                )
                for f in dataclasses.fields(group)
            ]
        else:
            annotation = hints.get(parameter.name, parameter.annotation)
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, (group, names) in groups.items():
            values[name] = group(**{field: values.pop(field) for field in names})
        return command(**values)

    run.__signature__ = inspect.Signature(parameters, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return typing.cast(F, run)


@dataclass(frozen=True)
class PipelineOptions:
    """How ``darm eval`` and ``darm solve`` describe a pipeline (every option but ``--pipeline`` and ``--device``,
    whose defaults differ); :meth:`spec` turns them into the stored spec through the pipeline builder."""

    planner: str | None = typer.Option(None, help="Planner checkpoint (text, latent): directory or Hugging Face id.")
    executor: str | None = typer.Option(None, help="Executor checkpoint: the model that writes the answer.")
    projector: str | None = typer.Option(None, help="Projector checkpoint (latent).")
    planner_kind: str | None = typer.Option(None, help="Text pairing: ddlm (default) | arm.")
    executor_kind: str | None = typer.Option(None, help="Text pairing: arm (default) | ddlm.")
    gen_length: int | None = typer.Option(None, help="Plan length (default: latent, the projector's; text / ddlm 256).")
    steps: int | None = typer.Option(
        None, help="Denoising steps (default: latent, the projector's training setting; else gen-length)."
    )
    block_length: int | None = typer.Option(
        None, help="Block length (LLaDA only; default: latent, as the projector was trained; else 32)."
    )
    threshold: float | None = typer.Option(None, help="Fast mode: reveal every position with confidence ≥ τ.")
    cache: Cache | None = typer.Option(None, help="Fast mode: block KV cache (default: latent, as trained; else none).")
    denoise_fraction: float | None = typer.Option(
        None, help="Take plan latents after this share of the denoising steps (latent; default: as trained, else 1)."
    )
    lookahead: str | None = typer.Option(None, metavar="N|all", help="DDLM writer: " + LOOKAHEAD_HELP)
    lookahead_choice: str | None = typer.Option(None, help=LOOKAHEAD_CHOICE_HELP)
    latent_tokens: str | None = typer.Option(None, hidden=True, help="Deprecated name of --lookahead.")
    latent_choice: str | None = typer.Option(None, hidden=True, help="Deprecated name of --lookahead-choice.")
    max_new_tokens: int | None = typer.Option(None, help="Answer budget (default 64 latent, 32 direct, 1024 CoT).")
    repetition_penalty: float = typer.Option(1.0, help="Autoregressive decoding repetition penalty.")
    chain_of_thought: bool = typer.Option(False, "--chain-of-thought", help="arm / ddlm alone: reason first.")
    latent_noise: float = typer.Option(0.0, help="Latent: Gaussian noise relative to the latents' RMS (control).")
    prompts: Path | None = typer.Option(None, help="JSON/YAML file overriding prompt templates.")
    system_prompt: str | None = typer.Option(None, help="ARM chat prompts: this system turn (default: an empty one).")
    no_system_turn: bool = typer.Option(
        False, "--no-system-turn", help="ARM chat prompts: no system turn (the chat template's own default applies)."
    )
    chat_template: ChatTemplate = typer.Option(
        ChatTemplate.auto,
        case_sensitive=False,
        help="ARM executor prompts: auto (its chat template; plain text, with a notice, for a tokenizer without one) "
        "| required (refuse such a tokenizer) | none (plain text).",
    )
    dtype: Dtype = typer.Option(Dtype.auto, case_sensitive=False, help="auto: float32 on CPU, bfloat16 on a GPU.")
    placement: str | None = typer.Option(
        None, help=f"Latent: {PLACEMENT_HELP} Default: the projector's stored one; another is refused."
    )
    force_projector: bool = typer.Option(
        False, "--force-projector", help="Latent: use a projector trained for another tokenizer anyway."
    )

    def spec(self, pipeline: str, device: str) -> dict[str, Any]:
        """The pipeline spec in ``config.json``'s layout; ``device`` (resolved) only resolves ``--dtype auto``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values |= {"cache": None if self.cache is None else self.cache.value, "dtype": self.dtype.value}
        values["chat_template"] = self.chat_template.value
        values["prompts"] = None if self.prompts is None else str(self.prompts)
        old = values.pop("latent_tokens"), values.pop("latent_choice")
        values["lookahead"], values["lookahead_choice"] = lookahead_options(self.lookahead, self.lookahead_choice, *old)
        return build_spec(pipeline=pipeline, device=device, **values)
