"""``darm plan``: sample plans from a diffusion planner, as text or as JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from latent_darm.cli.choices import DEVICE_HELP, Cache, Dtype, Remasking, complete_device
from latent_darm.cli.common import (
    LOOKAHEAD_CHOICE_HELP,
    LOOKAHEAD_HELP,
    console,
    lookahead_options,
    parse_dtype,
    resolve_device,
    resolve_dtype,
    seed_callback,
)
from latent_darm.cli.options import with_option_groups
from latent_darm.errors import DataError
from latent_darm.io import read_jsonl
from latent_darm.progress import progress_bar

if TYPE_CHECKING:
    from latent_darm.sampling import SamplerConfig

REMASKING_HELP = (
    "Which masked positions to reveal. LLaDA: low_confidence (default) | random. "
    "Dream: maskgit_plus (default) | topk_margin | entropy | origin. DiffusionGemma: entropy_bound (its own)."
)


def read_prompts(path: Path) -> list[str]:
    """Prompts from a JSONL file with a ``prompt`` string on every line."""
    prompts = []
    for number, record in read_jsonl(path):
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}:{number}: missing or empty 'prompt' string")
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path}: no prompts in file")
    return prompts


@dataclass(frozen=True)
class SamplerOptions:
    """The sampler options of ``darm plan`` (an option group: see :mod:`latent_darm.cli.options`); the planner's
    family checks them and fills what is left unset."""

    gen_length: int = typer.Option(64, help="Tokens to generate.")
    steps: int = typer.Option(
        64, help="Denoising steps in total, ≤ gen length (LLaDA: divisible by the number of blocks)."
    )
    block_length: int = typer.Option(
        None, help="Semi-autoregressive block length (LLaDA only, default 32; Dream denoises the whole canvas)."
    )
    temperature: float = typer.Option(0.0, help="Sampling temperature; 0 = greedy (our default for every family).")
    top_p: float = typer.Option(
        None, help="Dream: nucleus filtering before sampling (default none). The official default is none too."
    )
    top_k: int = typer.Option(
        None, help="Dream: top-k filtering (default none; the official sampler, called bare, uses 50 at temperature 1)."
    )
    alg_temp: float = typer.Option(
        None, help="Dream: draw positions from softmax(confidence / alg_temp) (default none)."
    )
    remasking: Remasking = typer.Option(None, help=REMASKING_HELP)
    cfg_scale: float = typer.Option(0.0, help="Classifier-free guidance scale.")
    threshold: float = typer.Option(None, help="Fast mode: reveal every position with confidence ≥ τ.")
    cache: Cache = typer.Option(Cache.none, help="Fast mode: block KV cache (Dream: none | prefix, the prompt's).")
    early_stop: bool = typer.Option(False, help="Fast mode: after an all-EOS block, the rest is EOS.")
    lookahead: str = typer.Option(None, metavar="N|all", help=LOOKAHEAD_HELP)
    lookahead_choice: str = typer.Option(None, help=LOOKAHEAD_CHOICE_HELP + " random: not with --cache.")
    latent_tokens: str = typer.Option(None, hidden=True, help="Deprecated name of --lookahead.")
    latent_choice: str = typer.Option(None, hidden=True, help="Deprecated name of --lookahead-choice.")

    def config(self, planner: str) -> SamplerConfig:
        """The settings for ``planner``'s family, checked before the planner loads."""
        from latent_darm.models.family import family_of_directory, sampler_config
        from latent_darm.models.hub import resolve_checkpoint

        held, choice = lookahead_options(self.lookahead, self.lookahead_choice, self.latent_tokens, self.latent_choice)
        return sampler_config(
            family_of_directory(resolve_checkpoint(planner, "planner")),
            gen_length=self.gen_length,
            block_length=self.block_length,
            steps=self.steps,
            temperature=self.temperature or None,  # 0 is every family's default (DiffusionGemma has none)
            top_p=self.top_p,
            top_k=self.top_k,
            alg_temp=self.alg_temp,
            remasking=None if self.remasking is None else self.remasking.value,
            cfg_scale=self.cfg_scale or None,
            threshold=self.threshold,
            cache=None if self.cache is Cache.none else self.cache.value,
            early_stop=self.early_stop or None,
            lookahead=held,
            lookahead_choice=choice,
        )


def print_plans(prompts: list[str], plans: list[Any], as_json: bool) -> None:
    """Each plan on stdout, in input order: text with its cost, or one JSON object per prompt."""
    for text, result in zip(prompts, plans, strict=True):
        if as_json:
            record = {
                "prompt_ids": result.prompt_ids,
                "token_ids": result.token_ids,
                "text": result.text,
                "nfe": result.nfe,
                "seconds": round(result.seconds, 4),
            }
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            typer.echo(f"# {text}\n{result.text}\n[nfe {result.nfe}, {result.seconds:.2f}s]\n")


@with_option_groups
def plan_command(
    planner: str = typer.Option(..., help="Planner checkpoint: local directory or Hugging Face id."),
    prompt: list[str] = typer.Option(None, "--prompt", help="A prompt (repeatable)."),
    prompts_file: Path = typer.Option(None, "--prompts-file", help='JSONL file, one {"prompt": ...} per line.'),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap prompts in the tokenizer's chat template."),
    sampler: SamplerOptions = ...,  # type: ignore[assignment]  (expanded into its options)
    seed: int = typer.Option(0, callback=seed_callback, help="Random seed (temperature > 0 or random remasking)."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    mask_token_id: int = typer.Option(None, help="Override the config's mask token id."),
    dtype: Dtype = typer.Option(Dtype.auto, case_sensitive=False, help="auto: float32 on CPU, bfloat16 on a GPU."),
    device: str = typer.Option("auto", help=DEVICE_HELP, autocompletion=complete_device),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt on stdout, in input order."),
) -> None:
    """Sample plans from a diffusion planner (LLaDA, Dream, DiffusionGemma: picked from its config.json)."""
    import torch

    from latent_darm.models.diffusion_lm import DiffusionLM

    if bool(prompt) == (prompts_file is not None):
        raise DataError("give exactly one of --prompt or --prompts-file")
    prompts = list(prompt) if prompt else read_prompts(prompts_file)
    if any(not p.strip() for p in prompts):
        raise DataError("--prompt must not be empty")
    config = sampler.config(planner)
    resolved_device = resolve_device(device)
    model = DiffusionLM.from_pretrained(
        planner,
        dtype=parse_dtype(resolve_dtype(dtype, resolved_device)),
        device=resolved_device,
        mask_token_id=mask_token_id,
    )
    torch.manual_seed(seed)
    generator = torch.Generator(device=resolved_device).manual_seed(seed)
    with progress_bar(console=console, transient=True) as bar:
        task = bar.add_task("planning", total=len(prompts))
        plans = model.generate(
            prompts,
            config,
            chat=chat,
            batch_size=batch_size,
            generator=generator,
            on_batch=lambda n: bar.advance(task, n),
        )
    print_plans(prompts, plans, as_json)
