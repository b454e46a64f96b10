"""The data side of projector training: a seeded data order per epoch (so a resumed run sees the batches an
uninterrupted one would), latents loaded from the stage-1 cache, and the noised-latents control's generators."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, Sampler

from latent_darm.errors import ConfigError, DataError
from latent_darm.projector.model import Projector
from latent_darm.training.latent_cache import LatentCache

if TYPE_CHECKING:
    from latent_darm.training.projector_step import EncodedExample


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) drawn from ``seed`` and the epoch; accelerate calls ``set_epoch``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.n, generator=generator).tolist()

    def __len__(self) -> int:
        return self.n


class _Indices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class LatentCollator:
    """Example indices → {"index": [B], "latents": [B, L, d] fp16 from the cache}."""

    def __init__(self, cache: LatentCache, keys: Sequence[str]) -> None:
        self.cache, self.keys = cache, list(keys)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {
            "index": torch.tensor(indices, dtype=torch.long),
            "latents": self.cache.load([self.keys[i] for i in indices]),
        }


def noise_generator(seed: int, epoch: int, batch: int, rank: int, device: torch.device) -> torch.Generator:
    """The noised-latents control's generator for one micro-batch, a pure function of where the batch is."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{batch}:{rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def check_cache(cache: LatentCache, items: Sequence[EncodedExample], projector: Projector) -> None:
    """Every example has latents in the cache, of the shape the projector reads."""
    missing = next((i.example.id for i in items if i.example.id not in cache), None)
    if missing is not None:
        raise DataError(f"latent cache {cache.directory}: no latents for example '{missing}'; run stage 1 first")
    shape = tuple(cache.load([items[0].example.id]).shape[1:])
    expected = (projector.config.plan_length, projector.config.planner_dim)
    if shape != expected:
        raise ConfigError(
            f"latent cache {cache.directory} holds latents [L, d] = {list(shape)}, but the projector expects "
            f"plan_length {expected[0]} and planner_dim {expected[1]}"
        )
