"""Attention patterns of the five variants, as boolean matrices (True = the query row may attend the key column).

Diffusion variants work on a *clean-first* order: the ``clean`` known tokens come first, then the masked ones in
a random order (each keeps its true position id, so the order only matters through the pattern). With ``c`` clean
columns and, at decoding time, the last ``targets`` columns being the positions to decode:

* ``mdm`` (:func:`full`): everything sees everything;
* ``sidm`` (:func:`solo`): clean sees clean; a masked column sees clean and itself;
* ``scdm`` (:func:`semi_causal`): clean sees clean; a masked column sees clean, the masked columns earlier in the
  order, and itself; a target sees clean, every latent (masked, non-target) column and itself — not the other
  targets.

A rule is a plain function of the column grids (:class:`Columns`); which variant uses which is its entry in
:mod:`.variants`. Autoregressive variants keep the natural order: ``ar`` is causal; ``ar-mtp`` / ``ar-ntp`` attend
fully over the first ``visible`` columns (the prefix and the window of MASK positions) and nothing after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latent_darm.errors import ConfigError


@dataclass(frozen=True)
class Columns:
    """What an attention rule reads, as broadcastable index grids: query ``q`` [1, T, 1] and key ``k`` [1, 1, T]
    columns, ``clean`` [B, 1, 1] clean columns per row, the ``first_target`` column, and whether the targets read
    the targets before them (``chain_targets``)."""

    q: torch.Tensor
    k: torch.Tensor
    clean: torch.Tensor
    first_target: int
    chain_targets: bool


AttentionRule = Callable[[Columns], torch.Tensor]  # Columns → bool, broadcastable to [B, T, T]


def full(c: Columns) -> torch.Tensor:
    """``mdm``: everything sees everything."""
    return torch.ones(c.clean.shape[0], c.q.shape[1], c.k.shape[2], dtype=torch.bool)


def solo(c: Columns) -> torch.Tensor:
    """``sidm``: every column sees the clean ones and itself."""
    return (c.k < c.clean) | (c.q == c.k)


def semi_causal(c: Columns) -> torch.Tensor:
    """``scdm``: a latent sees clean, the latents earlier in the order and itself; a target sees clean, every
    latent and itself (with ``chain_targets`` also the targets before it)."""
    q, k, clean, first_target = c.q, c.k, c.clean, c.first_target
    query_latent = (q >= clean) & (q < first_target)
    key_latent = (k >= clean) & (k < first_target)
    query_target = q >= first_target
    pattern = (k < clean) | (q == k) | (query_latent & key_latent & (k < q)) | (query_target & key_latent)
    if c.chain_targets:
        pattern = pattern | (query_target & (k >= first_target) & (k < q))
    return pattern


def _as_counts(value: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.long).reshape(-1)


def diffusion_pattern(
    rule: AttentionRule, clean: int | torch.Tensor, length: int, targets: int = 0, *, chain_targets: bool = False
) -> torch.Tensor:
    """``rule``'s pattern over ``length`` clean-first columns with ``clean`` clean columns (an int, or a tensor [B]
    of per-row counts) whose last ``targets`` columns are being decoded. [T, T] for an int, else [B, T, T]. With
    ``chain_targets`` a target also reads the targets before it in the order (SCDM's semi-causal rule carried on
    through the targets, as the authors' decoding)."""
    counts = _as_counts(clean)
    if targets < 0 or bool(((counts < 0) | (counts + targets > length)).any()):
        raise ConfigError(f"clean={counts.tolist()} and targets={targets} do not fit in {length} columns")
    idx = torch.arange(length)
    columns = Columns(idx[None, :, None], idx[None, None, :], counts[:, None, None], length - targets, chain_targets)
    pattern = torch.broadcast_to(rule(columns), (len(counts), length, length))
    return pattern[0] if isinstance(clean, int) else pattern


def causal_pattern(length: int) -> torch.Tensor:
    """``ar``: each column sees itself and the columns before it. [T, T]."""
    return torch.ones(length, length, dtype=torch.bool).tril()


def window_pattern(visible: int | torch.Tensor, length: int) -> torch.Tensor:
    """``ar-mtp`` / ``ar-ntp``: full attention over the first ``visible`` columns (int or [B]); a column beyond
    them is not in the computation (it sees only itself and nobody sees it). [T, T] for an int, else [B, T, T]."""
    counts = _as_counts(visible)
    idx = torch.arange(length)
    q, k = idx[None, :, None], idx[None, None, :]
    v = counts[:, None, None]
    pattern = ((q < v) & (k < v)) | (q == k)
    return pattern[0] if isinstance(visible, int) else pattern
