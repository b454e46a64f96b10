"""The teacher-forced one-step diagnostic: does a model's prediction of one answer cell improve when latent tokens
are in the pass? It separates what latent tokens do for a single prediction from what decoding order and error
accumulation do to a whole puzzle.

Per test row, from the true answer: diffusion variants mask m answer cells (m uniform in 1..answer length), take one
masked cell as the target and compare the pass holding the clean cells, n latent tokens (other masked cells, the
knob; ``None`` = all of them) and the target, with the pass holding no latent token. AR+MTP / AR-NTP cut the
answer at a uniform point and compare the prefix plus w MASK positions with the prefix plus one (w = 1). The
target's cross-entropy and whether its argmax is right are averaged over rows. Draws come from a generator seeded
by the caller, so the numbers are reproducible and the same cells are used for both passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from latent_darm.latent_tokens.decoding import _committable
from latent_darm.latent_tokens.patterns import AttentionRule, diffusion_pattern, window_pattern
from latent_darm.models.llada.modeling import LLaDAModelLM


def _score(logits: torch.Tensor, model: LLaDAModelLM, targets: torch.Tensor) -> tuple[float, int]:
    """(summed cross-entropy, number right) of the last column's logits against ``targets``."""
    logits = _committable(logits[:, -1], model)
    loss = F.cross_entropy(logits, targets.to(logits.device), reduction="sum")
    return float(loss), int((logits.argmax(-1).cpu() == targets).sum())


def _diffusion_pass(
    model: LLaDAModelLM, rows: torch.Tensor, prompt: int, attention: AttentionRule, masked: torch.Tensor, latents: int
) -> tuple[float, int]:
    """Rows [B, T] whose answer cells ``masked`` [B, m] (target first) are masked; ``latents`` of the others in."""
    batch, length = rows.shape
    answer = length - prompt
    target, latent = masked[:, :1], masked[:, 1 : 1 + latents]
    is_masked = torch.zeros(batch, answer, dtype=torch.bool).scatter_(1, masked, True)
    clean = torch.argsort(is_masked.int(), dim=1, stable=True)[:, : answer - masked.shape[1]]
    columns = torch.cat((torch.arange(prompt).expand(batch, -1), torch.cat((clean, latent, target), 1) + prompt), 1)
    ids = rows.clone()
    ids[:, prompt:] = torch.where(is_masked, model.config.mask_token_id, rows[:, prompt:])
    n_clean = prompt + clean.shape[1]
    pattern = diffusion_pattern(attention, n_clean, columns.shape[1], targets=1)
    device = model.device
    logits = model(
        ids.gather(1, columns).to(device),
        position_ids=columns.to(device),
        attention_pattern=pattern.to(device),
        logits_slice=slice(-1, None),
    ).logits
    assert logits is not None
    return _score(logits, model, rows.gather(1, target + prompt)[:, 0])


def _window_pass(model: LLaDAModelLM, rows: torch.Tensor, prompt: int, cut: int, window: int) -> tuple[float, int]:
    """Prefix up to answer cell ``cut``, then ``window`` MASK positions, full attention; predict cell ``cut``."""
    here = prompt + cut
    ids = torch.cat((rows[:, :here], torch.full((rows.shape[0], window), model.config.mask_token_id)), 1)
    device = model.device
    logits = model(
        ids.to(device), attention_pattern=window_pattern(ids.shape[1], ids.shape[1]).to(device),
        logits_slice=slice(here, here + 1),
    ).logits  # fmt: skip
    assert logits is not None
    return _score(logits, model, rows[:, here])


Score = tuple[float, int]
Passes = Callable[[torch.Tensor, int], tuple[Score, Score]]  # (row index, draw) → (with latents, without)


@torch.no_grad()
def diffusion_one_step(
    model: LLaDAModelLM,
    rows: torch.Tensor,
    prompt: int,
    attention: AttentionRule,
    latent: int | None,
    generator: torch.Generator,
    batch_size: int = 256,
) -> dict[str, Any]:
    """A diffusion variant's diagnostic under its ``attention`` rule with ``latent`` latent tokens (None = all)."""
    answer = rows.shape[1] - prompt
    draws = torch.randint(1, answer + 1, (rows.shape[0],), generator=generator)  # masked cells per row
    orders = torch.argsort(torch.rand(rows.shape[0], answer, generator=generator), dim=1)

    def passes(index: torch.Tensor, m: int) -> tuple[Score, Score]:
        n = m - 1 if latent is None else min(latent, m - 1)
        with_latents = _diffusion_pass(model, rows[index], prompt, attention, orders[index, :m], n)
        return with_latents, _diffusion_pass(model, rows[index], prompt, attention, orders[index, :m], 0)

    return _averaged(draws, passes, batch_size)


@torch.no_grad()
def window_one_step(
    model: LLaDAModelLM,
    rows: torch.Tensor,
    prompt: int,
    window: int | None,
    generator: torch.Generator,
    batch_size: int = 256,
) -> dict[str, Any]:
    """An AR+MTP / AR-NTP diagnostic: ``window`` MASK positions after the cut (None = all) against one."""
    answer = rows.shape[1] - prompt
    draws = torch.randint(answer, (rows.shape[0],), generator=generator)  # the cut per row

    def passes(index: torch.Tensor, cut: int) -> tuple[Score, Score]:
        rest = answer - cut
        with_latents = _window_pass(model, rows[index], prompt, cut, rest if window is None else min(window, rest))
        return with_latents, _window_pass(model, rows[index], prompt, cut, 1)

    return _averaged(draws, passes, batch_size)


def _averaged(draws: torch.Tensor, passes: Passes, batch_size: int) -> dict[str, Any]:
    """Target loss and accuracy with the latent tokens and with none, averaged over rows; rows sharing a draw run
    as one batch."""
    totals = {"loss": 0.0, "right": 0, "loss_none": 0.0, "right_none": 0}
    for drawn in sorted(set(draws.tolist())):
        picked = (draws == drawn).nonzero()[:, 0]
        for start in range(0, len(picked), batch_size):
            with_latents, without = passes(picked[start : start + batch_size], drawn)
            totals["loss"] += with_latents[0]
            totals["right"] += with_latents[1]
            totals["loss_none"] += without[0]
            totals["right_none"] += without[1]
    count = len(draws)
    return {
        "loss": totals["loss"] / count,
        "accuracy": totals["right"] / count,
        "loss_none": totals["loss_none"] / count,
        "accuracy_none": totals["right_none"] / count,
    }
