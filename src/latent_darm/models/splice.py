"""The splice: soft tokens (projected plan latents) placed among the executor's prompt embeddings.

Placements:

- ``prefix`` (the paper's): ``[soft ; embed(chat prompt incl. BOS and assistant header)]``.
- ``inline``: the soft tokens replace :data:`PLAN_MARKER` inside the user turn; the text on either side of the
  marker is tokenized separately, so the result never depends on how the marker itself would tokenize. The latent
  pipeline's prompt is then the text pipeline's executor prompt with the marker where the plan text goes (unless the
  latent template holds the marker itself), so the soft tokens sit exactly where a text plan would.
- ``prefix-cue`` (the authors' released code): ``[soft ; embed(PLAN_CUE) ; embed(chat prompt)]`` — the prefix
  followed by a short cue that tells the executor what came before. Their 128 placeholder tokens between prefix and
  cue are left out (they carry nothing the executor can read).

Rows are left-padded as a whole (pads before the soft tokens) and positions come from the attention mask, so each
row's first real input sits at position 0 and a row's logits are the same in a batch as alone. Hugging Face
causal LMs number positions 0..T-1 by index when given no ``position_ids`` (``generate`` derives them from the mask,
a plain forward does not), so callers pass the positions returned here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PLACEMENTS = ("prefix", "inline", "prefix-cue")
PLAN_MARKER = "<<PLAN>>"
PLAN_CUE = "Given these hints:\n"  # prefix-cue placement: read right after the soft tokens (no BOS of its own)


def splice(soft: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """One row: ``[before ; soft ; after]`` with before [a, d], soft [L, d], after [b, d] → [a + L + b, d].
    Prefix placement is ``before`` empty (a = 0)."""
    return torch.cat([before, soft.to(after.dtype), after], dim=0)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 0/1 mask → [B, T] positions counting real inputs from 0; pads get 0 (they are never attended)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0) * attention_mask.long()


def left_pad(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [T_i, d] → (inputs_embeds [B, T, d] with zeros on the left, attention_mask [B, T], position_ids [B, T])."""
    width = max(r.shape[0] for r in rows)
    first = rows[0]
    embeds = first.new_zeros((len(rows), width, first.shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        embeds[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return embeds, mask, position_ids_from_mask(mask)
