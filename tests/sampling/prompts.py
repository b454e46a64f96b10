"""Left-padded prompt batches for the sampler tests (pad on the left, as the reference sampler expects)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] ids padded with ``pad_id`` on the left, and the attention mask (1 on the real tokens)."""
    width = max(len(row) for row in rows)
    prompt = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for index, row in enumerate(rows):
        prompt[index, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return prompt, mask
