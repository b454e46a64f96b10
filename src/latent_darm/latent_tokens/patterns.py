"""Attention patterns of the five variants, as boolean matrices (True = the query row may attend the key column).

Diffusion variants work on a *clean-first* order: the ``clean`` known tokens come first, then the masked ones in
a random order (each keeps its true position id, so the order only matters through the pattern). With ``c`` clean
columns and, at decoding time, the last ``targets`` columns being the positions to decode:

* ``mdm``: everything sees everything;
* ``sidm``: clean sees clean; a masked column sees clean and itself;
* ``scdm``: clean sees clean; a masked column sees clean, the masked columns earlier in the order, and itself; a
  target sees clean, every latent (masked, non-target) column and itself — not the other targets.

Autoregressive variants keep the natural order: ``ar`` is causal; ``ar-mtp`` / ``ar-ntp`` attend fully over the
first ``visible`` columns (the prefix and the window of MASK positions) and nothing after.
"""

from __future__ import annotations

import torch

from latent_darm.errors import ConfigError

DIFFUSION_VARIANTS = ("mdm", "sidm", "scdm")
AR_VARIANTS = ("ar", "ar-mtp", "ar-ntp")
VARIANTS = DIFFUSION_VARIANTS + AR_VARIANTS
DEFAULT_VARIANTS = ("mdm", "sidm", "scdm", "ar", "ar-mtp")  # the five; ar-ntp is the opt-in control


def check_variant(name: str) -> str:
    """``name`` if it is a variant, else a one-line error naming it."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")
    return name


def _as_counts(value: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.long).reshape(-1)


def diffusion_pattern(
    variant: str, clean: int | torch.Tensor, length: int, targets: int = 0, *, chain_targets: bool = False
) -> torch.Tensor:
    """The ``variant``'s pattern over ``length`` clean-first columns with ``clean`` clean columns (an int, or a
    tensor [B] of per-row counts) whose last ``targets`` columns are being decoded. [T, T] for an int, else
    [B, T, T]. SCDM's targets read every latent; with ``chain_targets`` also the targets before them in the
    order (the semi-causal rule carried on through the targets, as the authors' decoding)."""
    if variant not in DIFFUSION_VARIANTS:
        raise ConfigError(f"unknown diffusion variant {variant!r}; expected one of {', '.join(DIFFUSION_VARIANTS)}")
    counts = _as_counts(clean)
    if targets < 0 or bool(((counts < 0) | (counts + targets > length)).any()):
        raise ConfigError(f"clean={counts.tolist()} and targets={targets} do not fit in {length} columns")
    idx = torch.arange(length)
    q, k = idx[None, :, None], idx[None, None, :]
    c = counts[:, None, None]
    key_clean = k < c
    self_ = q == k
    if variant == "mdm":
        pattern = torch.ones(len(counts), length, length, dtype=torch.bool)
    elif variant == "sidm":
        pattern = key_clean | self_
    else:
        first_target = length - targets
        query_latent = (q >= c) & (q < first_target)
        key_latent = (k >= c) & (k < first_target)
        query_target = q >= first_target
        pattern = key_clean | self_ | (query_latent & key_latent & (k < q)) | (query_target & key_latent)
        if chain_targets:
            pattern = pattern | (query_target & (k >= first_target) & (k < q))
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
