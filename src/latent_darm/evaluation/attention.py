"""``darm diagnose --attention``: where the executor looks while it answers (the paper's attention analysis).

For each finished item of a latent or text run (up to ``limit``), the executor re-reads its input exactly as the
pipeline built it — soft tokens at their placement (the planner is re-run for the latents) or the recorded plan
text in the text prompt — followed by the answer it gave (its recorded output, re-tokenized). At every position
that produces an answer token (the last prompt position and each answer token but the last), each layer's
attention, averaged over heads, is split into shares summing to 1 over four key groups:

- ``plan``: the soft tokens, or the tokens of the plan text;
- ``question``: the tokens of the question text;
- ``prompt``: everything else in the prompt (BOS, chat template, instructions, a cue);
- ``output``: the answer tokens written so far (the executor's own output).

Shares are averaged over answer positions per item, then over items, split by whether the item was graded
correct. The model runs with eager attention for this (the only kind that returns the weights).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latent_darm.errors import ConfigError
from latent_darm.evaluation.report import Run, markdown_table
from latent_darm.figures import agg_figure
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.splice import PLAN_MARKER
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.latent import LatentPipeline

GROUPS = ("plan", "question", "prompt", "output")


def label_tokens(
    executor: AutoregressiveLM, text: str, spans: dict[str, tuple[int, int]], ids: Sequence[int]
) -> list[str]:
    """A group per token of ``ids`` (the tokenization of ``text``, maybe with a BOS the text lacks): the span
    (character range) a token overlaps, else ``prompt``."""
    encoded = executor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = list(encoded["offset_mapping"])
    if len(ids) == len(offsets) + 1:  # a BOS prepended without a chat template
        offsets = [(0, 0), *offsets]
    if len(ids) != len(offsets):
        raise ConfigError("the executor's tokenizer does not give offsets that match its prompt ids")
    labels = []
    for start, end in offsets:
        group = next((name for name, (a, b) in spans.items() if start < b and end > a and end > start), "prompt")
        labels.append(group)
    return labels


def _span(text: str, part: str | None) -> dict[str, tuple[int, int]]:
    if not part:
        return {}
    at = text.find(part)
    return {} if at < 0 else {"x": (at, at + len(part))}


def _segment(executor: AutoregressiveLM, text: str, ids: Sequence[int], question: str, plan: str | None) -> list[str]:
    spans = {f"question{k}": v for k, v in _span(text, question).items()}
    spans |= {f"plan{k}": v for k, v in _span(text, plan).items()}
    return [label.rstrip("x") for label in label_tokens(executor, text, spans, ids)]


@dataclass(frozen=True)
class ItemInput:
    """One item as the executor reads it: embeddings [T, d] of prompt + answer, a group per prompt position, and
    how many answer tokens follow the prompt."""

    embeds: torch.Tensor
    groups: list[str]
    answer_length: int


def _executor_of(pipeline: Pipeline) -> tuple[AutoregressiveLM, str | None, bool]:
    """(executor, system turn, whether its prompts are chat-templated: ``--chat-template none`` sends plain ones)."""
    executor = getattr(pipeline, "executor", None)
    model = getattr(executor, "model", None)
    if isinstance(executor, AutoregressiveLM):
        return executor, pipeline.templates.system_prompt, True  # type: ignore[attr-defined]
    if isinstance(model, AutoregressiveLM):
        return model, getattr(executor, "system", ""), getattr(executor, "chat", True)
    raise ConfigError("--attention needs a latent or text run with an autoregressive executor")


@torch.no_grad()
def build_inputs(pipeline: Pipeline, records: Sequence[dict[str, Any]]) -> list[ItemInput]:
    """The executor's inputs for ``records`` (with their ``question``, ``answer_type``, ``plan`` and ``output``)."""
    executor, system, chat = _executor_of(pipeline)
    templates = pipeline.templates  # type: ignore[attr-defined]
    questions = [str(r["question"]) for r in records]
    soft: torch.Tensor | list[torch.Tensor] | None = None
    if isinstance(pipeline, LatentPipeline):  # what the run's executor read: noise and per-row lengths included
        soft = pipeline.soft_tokens(pipeline.plan(questions, batch_size=8))
    items = []
    for row, (record, question) in enumerate(zip(records, questions, strict=True)):
        answer = executor._tokenize(str(record.get("output") or ""))
        answer_type = str(record.get("answer_type") or "math")
        if soft is None:
            prompt = templates.text_executor_prompt(question, str(record.get("plan") or ""), answer_type)
            ids = executor.prompt_ids(prompt, chat, system)
            text = executor.rendered_prompt(prompt, chat, system)
            groups = _segment(executor, text, ids, question, record.get("plan"))
            embeds = executor.embed([*ids, *answer])
        else:
            placement = pipeline.projector.config.placement  # type: ignore[attr-defined]
            prompt = templates.soft_token_prompt(question, answer_type, placement)
            before, after = executor.plan_segments(prompt, placement, system)
            text = executor.rendered_prompt(prompt, system=system)
            head, _, tail = text.partition(PLAN_MARKER) if placement == "inline" else ("", "", text)
            cue = len(after) - len(executor.chat_ids(prompt, system)) if placement == "prefix-cue" else 0
            groups = [
                *_segment(executor, head, before, question, None),
                *["plan"] * len(soft[row]),
                *["prompt"] * cue,
                *_segment(executor, tail, after[cue:], question, None),
            ]
            embeds = torch.cat([executor.embed(before), soft[row], executor.embed([*after, *answer])])
        items.append(ItemInput(embeds, groups, len(answer)))
    return items


@torch.no_grad()
def attention_shares(executor: AutoregressiveLM, item: ItemInput) -> torch.Tensor:
    """[layers, 4] mean attention share of the answer-producing positions on each group in :data:`GROUPS`."""
    model = executor.model
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    prompt_length = len(item.groups)
    total = prompt_length + item.answer_length
    out = model(inputs_embeds=item.embeds[None].to(executor.dtype), output_attentions=True, use_cache=False)
    groups = [*item.groups, *["output"] * item.answer_length]
    masks = torch.stack([torch.tensor([g == name for g in groups]) for name in GROUPS]).float()  # [4, T]
    queries = list(range(prompt_length - 1, max(total - 1, prompt_length)))
    shares = []
    for layer in out.attentions:  # [1, heads, T, T]
        weights = layer[0].float().mean(0)[queries]  # [Q, T]
        shares.append((weights @ masks.T.to(weights.device)).mean(0))  # [4]
    return torch.stack(shares).cpu()


@dataclass(frozen=True)
class AttentionRow:
    label: str
    outcome: str
    layer: int
    n: int
    shares: tuple[float, ...]

    def csv_fields(self) -> dict[str, Any]:
        return {"label": self.label, "outcome": self.outcome, "layer": self.layer, "n": self.n} | {
            name: round(value, 6) for name, value in zip(GROUPS, self.shares, strict=True)
        }


def attention_profile(run: Run, pipeline: Pipeline, limit: int) -> list[AttentionRow]:
    """Per layer and outcome (correct / wrong), the mean shares over the run's first ``limit`` items."""
    records = run.records[:limit]
    executor, _, _ = _executor_of(pipeline)
    per_item = [attention_shares(executor, item) for item in build_inputs(pipeline, records)]
    rows = []
    for outcome in ("correct", "wrong"):
        chosen = [s for s, r in zip(per_item, records, strict=True) if bool(r.get("correct")) == (outcome == "correct")]
        if not chosen:
            continue
        mean = torch.stack(chosen).mean(0)
        for layer, values in enumerate(mean.tolist()):
            rows.append(AttentionRow(run.label, outcome, layer, len(chosen), tuple(values)))
    return rows


def write_attention(rows: Sequence[AttentionRow], out_dir: Path) -> list[Path]:
    """``attention.csv``, ``attention.md`` (shares in %) and ``attention.png`` (share per layer, one panel per
    group, a line per run and outcome)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out_dir / "attention.csv", out_dir / "attention.md", out_dir / "attention.png"
    records = [row.csv_fields() for row in rows]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    cells = [[r.label, r.outcome, str(r.layer), str(r.n), *(f"{100 * v:.1f}" for v in r.shares)] for r in rows]
    headers = ["run", "answers", "layer", "n", *(f"{g} %" for g in GROUPS)]
    md_path.write_text("# Executor attention while answering\n\n" + markdown_table(headers, cells) + "\n")
    figure = agg_figure("the attention figure", figsize=(4 * len(GROUPS), 3.6), layout="constrained")
    axes = figure.subplots(1, len(GROUPS), sharey=True)
    series = sorted({(r.label, r.outcome) for r in rows})
    for index, group in enumerate(GROUPS):
        for label, outcome in series:
            points = [r for r in rows if (r.label, r.outcome) == (label, outcome)]
            axes[index].plot(
                [r.layer for r in points],
                [100 * r.shares[index] for r in points],
                "-o" if outcome == "correct" else "--x",
                label=f"{label} ({outcome})",
            )
        axes[index].set_title(f"share on {group}")
        axes[index].set_xlabel("executor layer")
        axes[index].grid(True, alpha=0.3)
    axes[0].set_ylabel("attention share (%)")
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.savefig(png_path, dpi=110)
    return [csv_path, md_path, png_path]
