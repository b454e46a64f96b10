"""``--init lstsq``: a closed-form projector from planner latents to the executor's embeddings of the plan tokens.

Each plan position gives one regression row: the planner's latent there (x, d_planner) and the executor's input
embedding of the token the planner decoded there (y, d_executor). Ridge least squares on centred rows,

    W = (Xcᵀ Xc + ridge · I)⁻¹ Xcᵀ Yc,   b = ȳ − x̄ W,

maps a latent to the embedding of its own plan token, position by position: the soft tokens then read as the plan
text would, with no training (0 steps), or as a start for training. The products are summed over batches of
cached examples in float64 (:class:`RidgeSums`), so memory does not grow with the training set. With ``ridge`` 0
the map needs at least d_planner + 1 rows and a centred Gram matrix Xcᵀ Xc of full rank (to float64 precision);
otherwise it is refused (one line naming ``--init lstsq``).

How the map seeds each architecture (:func:`seed_projector`):

- ``linear``: weight = Wᵀ, bias = b (exact).
- ``mlp2_gelu_rmsnorm`` / ``mlp2x_gelu`` (Linear(d_p→h) → GELU → Linear(h→d_e)): GELU(u) − GELU(−u) = u for the exact
  and the tanh GELU alike (Φ(u) + Φ(−u) = 1, tanh is odd), so a pair of hidden units carries one direction linearly.
  With W ≈ A B its best rank-k factorisation (SVD, k = min(h // 2, rank W)), A = U_k S_k, B = V_kᵀ: the first
  linear's rows 0..k−1 are Aᵀ with bias −x̄ A, rows k..2k−1 their negation; the second linear's columns are Bᵀ and
  −Bᵀ, bias ȳ. So the MLP computes (x − x̄) A B + ȳ exactly (exactly x W + b when k = rank W). The remaining hidden
  units keep their random first-layer rows and get zero second-layer columns, so they start silent but train. The
  output RMSNorm (``mlp2_gelu_rmsnorm``) then rescales each soft token to the norm's scale, the executor's typical
  embedding RMS when built by ``Projector.for_pair``: the direction is the map's, the length the embeddings'.
- Other architectures are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM, tokenizer_fingerprint
from latent_darm.projector.model import Projector
from latent_darm.training.latent_cache import LatentCache

OPTION = "--init lstsq"
SEEDABLE = ("linear", "mlp2_gelu_rmsnorm", "mlp2x_gelu")


@dataclass(frozen=True)
class LinearMap:
    """y ≈ (x − x_mean) @ weight + y_mean; weight [d_planner, d_executor], means [d]."""

    weight: torch.Tensor
    x_mean: torch.Tensor
    y_mean: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.x_mean) @ self.weight + self.y_mean

    @property
    def bias(self) -> torch.Tensor:
        return self.y_mean - self.x_mean @ self.weight


def _check_ridge(ridge: float) -> None:
    if not math.isfinite(ridge) or ridge < 0:
        raise ConfigError(f"{OPTION}: the ridge must be a finite number >= 0, got {ridge}")


class RidgeSums:
    """The ridge map's sufficient statistics (row count, sums, XᵀX, XᵀY), gathered batch by batch in float64, so
    only one batch of latents is ever held in float64 (not the whole training set).

    Rows are summed shifted by the first batch's means: the centred products do not depend on the shift, and a
    shift near the mean keeps XᵀX − n x̄ x̄ᵀ from cancelling away the digits of latents that sit far from 0."""

    def __init__(self) -> None:
        self.rows = 0
        self.shift_x = self.shift_y = self.sum_x = self.sum_y = self.xtx = self.xty = torch.empty(0)

    def add(self, latents: torch.Tensor, targets: torch.Tensor) -> None:
        """Add latents [..., d_p] and their targets [..., d_e] (rows paired position by position)."""
        x = latents.reshape(-1, latents.shape[-1]).double()
        y = targets.reshape(-1, targets.shape[-1]).double()
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"{OPTION}: {x.shape[0]} latent rows but {y.shape[0]} target rows")
        if not x.shape[0]:
            return
        if not self.rows:
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
            self.sum_x, self.sum_y = torch.zeros_like(self.shift_x), torch.zeros_like(self.shift_y)
            self.xtx = x.new_zeros(x.shape[1], x.shape[1])
            self.xty = x.new_zeros(x.shape[1], y.shape[1])
        x, y = x - self.shift_x, y - self.shift_y
        self.rows += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xtx += x.T @ x
        self.xty += x.T @ y

    def solve(self, ridge: float, dim: int | None = None) -> LinearMap:
        """``W = (Xcᵀ Xc + ridge · I)⁻¹ Xcᵀ Yc`` from the sums; too few rows or a singular system is refused
        (``dim``: the latent width, for the message when no row was added)."""
        _check_ridge(ridge)
        rows, dim = self.rows, self.xtx.shape[0] if self.rows else (dim or 0)
        if rows < 2 or (ridge == 0 and rows < dim + 1):
            raise ConfigError(
                f"{OPTION}: {rows} plan positions are too few for a map from {dim} planner dimensions "
                f"(with ridge 0 it needs at least {dim + 1}); give more training examples or a ridge > 0"
            )
        mean_x, mean_y = self.sum_x / rows, self.sum_y / rows  # of the shifted rows
        centred_xtx = self.xtx - rows * torch.outer(mean_x, mean_x)
        centred_xty = self.xty - rows * torch.outer(mean_x, mean_y)
        if ridge == 0 and (rank := int(torch.linalg.matrix_rank(centred_xtx, hermitian=True))) < dim:
            raise ConfigError(
                f"{OPTION}: the centred planner latents have rank {rank} < {dim} "
                "(a singular system with ridge 0); give more varied examples or a ridge > 0"
            )
        gram = centred_xtx + ridge * torch.eye(dim, dtype=centred_xtx.dtype)
        weight = torch.linalg.solve(gram, centred_xty)
        return LinearMap(weight, self.shift_x + mean_x, self.shift_y + mean_y)


def ridge_map(latents: torch.Tensor, targets: torch.Tensor, ridge: float) -> LinearMap:
    """Fit latents [..., d_p] → targets [..., d_e] (rows paired position by position) in float64."""
    _check_ridge(ridge)
    sums = RidgeSums()
    sums.add(latents, targets)
    return sums.solve(ridge, latents.shape[-1])


def ridge_map_from_cache(
    executor: AutoregressiveLM,
    cache: LatentCache,
    keys: Sequence[str],
    ridge: float,
    planner_tokenizer: object | None = None,
    batch_size: int = 64,
) -> LinearMap:
    """The ridge map on the cached latents of ``keys`` and the executor's embeddings of their plan tokens, read
    ``batch_size`` examples at a time."""
    _check_ridge(ridge)
    tokens = cache.plan_tokens(keys)  # one read of the token files; small next to the latents
    sums = RidgeSums()
    dim = 0
    for start in range(0, len(keys), batch_size):
        latents = cache.load(keys[start : start + batch_size]).float().cpu()
        targets = plan_token_embeddings(executor, tokens[start : start + batch_size], planner_tokenizer)
        sums.add(latents, targets)
        dim = latents.shape[-1]
    return sums.solve(ridge, dim)


def plan_token_embeddings(
    executor: AutoregressiveLM, token_ids: Sequence[Sequence[int]], planner_tokenizer: object | None = None
) -> torch.Tensor:
    """The executor's input embeddings of the planner's decoded plan tokens: [N, L] ids → [N, L, d_executor].
    Same tokenizer (by fingerprint, or none given): the ids index the executor's table directly. Otherwise each
    planner token is decoded to text and re-tokenized by the executor, and its pieces' embeddings averaged (a token
    with no executor pieces, e.g. a special one, maps to zeros)."""
    table = executor.input_embeddings.weight.detach().float().cpu()
    ids = torch.tensor([list(row) for row in token_ids], dtype=torch.long)
    same = planner_tokenizer is None or tokenizer_fingerprint(planner_tokenizer) == tokenizer_fingerprint(
        executor.tokenizer
    )
    if same:
        return table[ids]
    pieces: dict[int, torch.Tensor] = {}
    for token in ids.unique().tolist():
        text = planner_tokenizer.decode([token])  # type: ignore[attr-defined]
        found = executor.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        pieces[token] = table[found].mean(0) if found else torch.zeros(table.shape[1])
    return torch.stack([torch.stack([pieces[t] for t in row]) for row in ids.tolist()])


def _linear(module: nn.Module) -> nn.Linear:
    assert isinstance(module, nn.Linear)
    return module


@torch.no_grad()
def seed_projector(projector: Projector, lmap: LinearMap) -> None:
    """Set ``projector``'s weights from the map, as the module docstring describes per architecture."""
    architecture = projector.config.architecture
    if architecture not in SEEDABLE:
        raise ConfigError(f"{OPTION} seeds {', '.join(SEEDABLE)} projectors; --architecture is {architecture}")
    weight, bias = lmap.weight, lmap.bias
    layers = projector.layers
    if architecture == "linear":
        first = _linear(layers[0])
        first.weight.copy_(weight.T.to(first.weight.dtype))
        first.bias.copy_(bias.to(first.bias.dtype))
        return
    first, second = _linear(layers[0]), _linear(layers[2])
    hidden = first.out_features
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    rank = int((s > s.max() * 1e-10).sum()) if s.numel() and float(s.max()) > 0 else 0
    k = min(hidden // 2, rank)
    a, b = u[:, :k] * s[:k], vh[:k]  # weight ≈ a @ b: [d_p, k] and [k, d_e]
    dtype = first.weight.dtype
    first.weight[:k] = a.T.to(dtype)
    first.weight[k : 2 * k] = -a.T.to(dtype)
    shift = -(lmap.x_mean @ a)
    first.bias[:k] = shift.to(dtype)
    first.bias[k : 2 * k] = -shift.to(dtype)
    second.weight.zero_()
    second.weight[:, :k] = b.T.to(dtype)
    second.weight[:, k : 2 * k] = -b.T.to(dtype)
    second.bias.copy_(lmap.y_mean.to(dtype))


def lstsq_projector(
    projector: Projector, latents: torch.Tensor, token_embeddings: torch.Tensor, ridge: float
) -> LinearMap:
    """Fit the map on latents [N, L, d_p] and their plan tokens' embeddings [N, L, d_e], seed ``projector``."""
    lmap = ridge_map(latents.float(), token_embeddings.float(), ridge)
    seed_projector(projector, lmap)
    return lmap
