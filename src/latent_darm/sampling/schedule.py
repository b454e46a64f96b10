"""Pure pieces of LLaDA's reverse process: the transfer schedule, Gumbel-max sampling, confidence, and the choice
of positions to reveal.

Each function matches the corresponding step of ML-GSAI/LLaDA ``generate.py``; the strategies compose them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def num_transfer_tokens(block_masks: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to reveal at each step of a block under the linear schedule: [B, steps] (int64).

    ``block_masks`` [B, L] marks masked positions of the block. With n masks, every step reveals n // steps
    and the first n % steps steps one more, so the block is fully revealed after ``steps`` steps.
    """
    n = block_masks.sum(dim=1, keepdim=True)
    base, remainder = n // steps, n % steps
    step_index = torch.arange(steps, device=block_masks.device)[None, :]
    return base + (step_index < remainder).long()


def gumbel_argmax(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Sample token ids [...] from logits [..., V]; temperature 0 is the plain argmax.

    Gumbel-max in float64 as the reference does it: argmax of exp(l) / (-log u)^T, which is argmax of
    l/T + Gumbel noise. Low precision here is known to hurt generation quality (arXiv:2409.02908). ``uniform`` is
    the noise u (float64, same shape as ``logits``); the caller draws it so it can reproduce the reference's draws.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    assert uniform is not None, "temperature > 0 needs uniform noise"
    return (logits.to(torch.float64).exp() / (-torch.log(uniform)) ** temperature).argmax(dim=-1)


def token_confidence(logits: torch.Tensor, tokens: torch.Tensor, excluded_ids: tuple[int, ...] = ()) -> torch.Tensor:
    """Softmax probability [...] of ``tokens`` under ``logits`` [..., V], computed in float32.

    ``excluded_ids`` get probability zero and the rest are renormalised: what the reference's
    ``confidence_eos_eot_inf`` does (it sets those logits to -inf before the softmax), so EOS/EoT are revealed last.
    """
    scores = logits.float()
    if excluded_ids:
        scores = scores.clone()
        scores[..., list(excluded_ids)] = -torch.inf
    probs = F.softmax(scores, dim=-1)
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def top_k_per_row(
    confidence: torch.Tensor, k: torch.Tensor, offset: int = 0, length: int | None = None
) -> torch.Tensor:
    """Boolean [B, W] marking the ``k[b]`` most confident positions of each row of the window ``confidence``.

    The reference runs ``topk`` on a whole-canvas row that is -inf outside the candidates, and ``topk`` breaks
    ties (e.g. confidences of exactly 0 when EOS/EoT are excluded) by position in the tensor it is given. So the
    window, which starts at canvas position ``offset``, is placed in a -inf row of the canvas ``length`` first:
    the same tensor as the reference's, hence the same choice.
    """
    batch, width = confidence.shape
    length = offset + width if length is None else length
    canvas_row = confidence.new_full((batch, length), -torch.inf)
    canvas_row[:, offset : offset + width] = confidence
    chosen = torch.zeros_like(canvas_row, dtype=torch.bool)
    for row in range(batch):
        count = int(k[row])
        if count > 0:
            chosen[row, torch.topk(canvas_row[row], k=count).indices] = True
    return chosen[:, offset : offset + width]


def above_threshold(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM's parallel rule: every position with confidence ≥ τ, and always the most confident one.

    Rows whose confidences are all -inf (nothing masked) get nothing.
    """
    chosen = confidence >= threshold
    best = confidence.argmax(dim=-1, keepdim=True)
    has_candidate = torch.isfinite(confidence).any(dim=-1, keepdim=True)
    chosen.scatter_(-1, best, has_candidate | chosen.gather(-1, best))
    return chosen & torch.isfinite(confidence)
