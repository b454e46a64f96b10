"""Stage 1 of projector training: run the frozen planner once per question and keep its plan latents on disk.

The planner is by far the most expensive model in the loop and is frozen, so its latents are computed once and
read back every epoch. The cache is a directory of safetensors shards (fp16 latents [L, d] per example, keyed by
example id) with a JSON sidecar per shard holding the decoded plan text for inspection. ``spec.json`` records
everything that determines a latent (planner, sampler settings, layer, planner prompt); a cache built under a
different spec is refused rather than silently mixed. The planner is recorded by its weights' fingerprint
(:mod:`latent_darm.models.fingerprint`), not its path: a cache copied elsewhere is reused, and one made by weights
since replaced is refused. Shards are written atomically, so a killed run resumes from its last shard; a shard that
cannot be read back (truncated, say) counts as missing and is computed again. Under several processes each rank
writes its own shards; a single process computes under a lock file, so two runs on one cache wait for each other
instead of computing the same latents twice.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from latent_darm.errors import ConfigError, DataError
from latent_darm.io import atomic_write_json, parse_json, writing
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.fingerprint import reference_fingerprint
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.sampling import SamplerConfig
from latent_darm.training.data import TrainingExample

logger = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
# 2: the planner is named by its weights' fingerprint, not its path (a cache of version 1 is refused as another spec).
SPEC_VERSION = 2
LOCK_FILE = ".lock"
_SHARD = re.compile(r"shard-r(\d+)-(\d+)\.(?:json|safetensors)")


def weights_id(reference: str) -> str:
    """What identifies a model in a spec or a run's identity: its weights' fingerprint (where it lives does not
    matter), or the reference itself when there is nothing to fingerprint (an in-memory model)."""
    fingerprint = reference_fingerprint(reference) if reference else None
    return fingerprint if fingerprint is not None else str(reference)


def spec_planner_weights(spec: dict[str, Any]) -> str | None:
    """The planner fingerprint a cache spec records (one mixing several caches: theirs, when they agree)."""
    if "planner_weights" in spec:
        return str(spec["planner_weights"])
    found = {w for part in spec.values() if isinstance(part, dict) for w in [spec_planner_weights(part)] if w}
    return found.pop() if len(found) == 1 else None


def cache_spec(planner: DiffusionLM, sampler: SamplerConfig, templates: PromptTemplates) -> dict[str, Any]:
    """What a cached latent depends on."""
    if sampler.hidden_layer is None:
        raise ConfigError("the latent cache needs sampler.hidden_layer (e.g. -1: after the final norm)")
    return {
        "version": SPEC_VERSION,
        "planner_weights": weights_id(planner.name_or_path),
        "planner_config": planner.model.config.to_dict(),
        "sampler": sampler.to_dict(),
        "planner_template": templates.planner,
    }


def _todays_layout(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored cache spec with its sampler settings as today's code writes them (a cache built before each planner
    family had its own settings stored every family's, at their defaults): such a cache is still this spec's."""
    from latent_darm.models.family import current_sampler_dict

    sampler = spec.get("sampler")
    return {**spec, "sampler": current_sampler_dict(sampler)} if isinstance(sampler, dict) else spec


@dataclass
class CachedPlan:
    """Index entry: which shard holds an example's latents, and its decoded plan."""

    shard: str
    plan: str


class LatentCache:
    """Read/append access to a latent cache directory."""

    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.directory = directory
        self.spec = spec
        self.index: dict[str, CachedPlan] = {}
        self.damaged: list[Path] = []  # shards that do not read back: their examples count as missing
        for sidecar in sorted(directory.glob("shard-*.json")):
            shard = sidecar.with_suffix(".safetensors").name
            if not (directory / shard).exists():
                continue  # killed between the two renames: the shard is redone
            plans = _readable_shard(directory / shard, sidecar)
            if plans is None:
                self.damaged.append(directory / shard)
                continue
            for key, plan in plans.items():
                self.index[key] = CachedPlan(shard, plan)

    @classmethod
    def open(cls, directory: str | Path, spec: dict[str, Any] | None = None) -> LatentCache:
        """Open (creating if needed). With ``spec``, refuse a cache that was built under another one."""
        directory = Path(directory)
        spec_path = directory / SPEC_FILE
        if spec_path.exists():
            stored = parse_json(spec_path.read_bytes(), str(spec_path))
            if not isinstance(stored, dict):
                raise DataError(f"{spec_path}: expected a JSON object")
            if spec is not None and _todays_layout(stored) != json.loads(json.dumps(spec)):
                differing = sorted(k for k in set(stored) | set(spec) if _todays_layout(stored).get(k) != spec.get(k))
                raise ConfigError(
                    f"latent cache {directory} was built with a different '{differing[0]}'; "
                    "use another --cache-dir or delete it"
                )
            return cls(directory, stored)
        if spec is None:
            raise DataError(f"{directory}: not a latent cache (no {SPEC_FILE})")
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(spec_path, spec)
        return cls(directory, spec)

    @staticmethod
    def check_planner(directory: str | Path, weights: str) -> None:
        """Before any model loads: refuse a cache made from other planner weights (``weights``: :func:`weights_id`)."""
        spec_path = Path(directory) / SPEC_FILE
        if not spec_path.is_file():
            return
        stored = parse_json(spec_path.read_bytes(), str(spec_path))
        if isinstance(stored, dict) and stored.get("planner_weights", weights) != weights:
            raise ConfigError(
                f"latent cache {directory} was built with a different 'planner_weights' ({stored['planner_weights']} "
                f"there, {weights} now); use another --cache-dir or delete it"
            )

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def plan(self, key: str) -> str:
        return self.index[key].plan

    def add(
        self,
        latents: dict[str, torch.Tensor],
        plans: dict[str, str],
        rank: int = 0,
        tokens: dict[str, list[int]] | None = None,
    ) -> None:
        """Write one shard: tensors (and the decoded plan token ids, ``tokens-…json``) first, then the sidecar that
        makes them visible. Numbered after every shard of this rank on disk (a damaged one removed in between must
        not make a new shard overwrite a good one)."""
        numbers = [int(m[2]) for p in self.directory.iterdir() if (m := _SHARD.fullmatch(p.name)) and int(m[1]) == rank]
        number = max(numbers, default=-1) + 1
        stem = f"shard-r{rank}-{number:05d}"
        tensors = {key: value.detach().to("cpu", torch.float16).contiguous() for key, value in latents.items()}
        tmp = self.directory / f".{stem}.safetensors.tmp"
        try:
            with writing(self.directory / f"{stem}.safetensors", "the shards before it are kept"):
                save_file(tensors, str(tmp))
                tmp.replace(self.directory / f"{stem}.safetensors")
        finally:
            tmp.unlink(missing_ok=True)
        if tokens is not None:  # --init lstsq's targets; a separate file so older caches stay readable
            atomic_write_json(self.directory / f"tokens-r{rank}-{number:05d}.json", tokens)
        atomic_write_json(self.directory / f"{stem}.json", plans)
        for key, plan in plans.items():
            self.index[key] = CachedPlan(f"{stem}.safetensors", plan)

    def plan_tokens(self, keys: Sequence[str]) -> list[list[int]]:
        """The planner's decoded token ids at the plan positions, for ``keys``; a cache built before they were
        stored (or an example without them) is a DataError naming ``--init lstsq``."""
        found: dict[str, list[int]] = {}
        for path in sorted(self.directory.glob("tokens-r*-*.json")):
            tokens = parse_json(path.read_bytes(), str(path))
            if not isinstance(tokens, dict) or not all(isinstance(v, list) for v in tokens.values()):
                raise DataError(
                    f"{path}: expected {{example id: [plan token ids]}}; rebuild the cache in a new --cache-dir"
                )
            found.update(tokens)
        missing = [k for k in keys if k not in found]
        if missing:
            raise DataError(
                f"latent cache {self.directory}: no plan token ids for example '{missing[0]}' (cached before they "
                "were stored); --init lstsq needs them: rebuild the cache in a new --cache-dir"
            )
        return [found[k] for k in keys]

    def load(self, keys: Sequence[str]) -> torch.Tensor:
        """Latents [B, L, d] (fp16) for ``keys``, read through safetensors' memory map."""
        missing = [k for k in keys if k not in self.index]
        if missing:
            raise DataError(f"latent cache {self.directory}: no latents for example '{missing[0]}'")
        by_shard: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            by_shard.setdefault(self.index[key].shard, []).append(position)
        rows: list[torch.Tensor | None] = [None] * len(keys)
        for shard, positions in by_shard.items():
            with safe_open(str(self.directory / shard), framework="pt") as handle:
                for position in positions:
                    rows[position] = handle.get_tensor(keys[position])
        return torch.stack([r for r in rows if r is not None])

    def remove_damaged(self) -> None:
        """Delete the shards that did not read back (and their sidecars): their examples are computed again."""
        for shard in self.damaged:
            logger.warning("latent cache shard %s is unreadable (truncated?); its latents are computed again", shard)
            shard.with_suffix(".json").unlink(missing_ok=True)
            shard.with_name(shard.name.replace("shard-", "tokens-", 1)).with_suffix(".json").unlink(missing_ok=True)
            shard.unlink(missing_ok=True)
        self.damaged = []


def _readable_shard(shard: Path, sidecar: Path) -> dict[str, str] | None:
    """The sidecar's {example id: plan} when the shard opens and holds every one of them; None when either file
    is damaged (a truncated shard, a copy cut short)."""
    try:
        plans = json.loads(sidecar.read_bytes())
        with safe_open(str(shard), framework="pt") as handle:
            held = set(handle.keys())
    except (SafetensorError, OSError, ValueError, RecursionError):
        return None
    if not isinstance(plans, dict) or not set(plans) <= held or not all(isinstance(v, str) for v in plans.values()):
        return None
    return plans


def build_latent_cache(
    planner: DiffusionLM,
    examples: Sequence[TrainingExample],
    directory: str | Path,
    sampler: SamplerConfig,
    templates: PromptTemplates,
    *,
    batch_size: int = 8,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> LatentCache:
    """Compute and store the latents of every example not yet cached (this rank's share of them). A single
    process holds the cache's lock file while it computes: a second run on the same cache waits, then finds the
    latents made. (Ranks of one multi-process run write disjoint shares and do not take it.)"""
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise DataError("training examples have duplicate ids; deduplicate the data first")
    spec = cache_spec(planner, sampler, templates)
    if world_size > 1:
        return _fill(planner, examples, LatentCache.open(directory, spec), sampler, templates, batch_size,
                     shard_size, rank, world_size, on_progress)  # fmt: skip
    LatentCache.open(directory, spec)  # refuses another spec before waiting for the lock
    with FileLock(Path(directory) / LOCK_FILE):
        cache = LatentCache.open(directory, spec)  # what another process added while this one waited
        cache.remove_damaged()
        return _fill(planner, examples, cache, sampler, templates, batch_size, shard_size, 0, 1, on_progress)


def _fill(
    planner: DiffusionLM,
    examples: Sequence[TrainingExample],
    cache: LatentCache,
    sampler: SamplerConfig,
    templates: PromptTemplates,
    batch_size: int,
    shard_size: int,
    rank: int,
    world_size: int,
    on_progress: Callable[[int], None] | None,
) -> LatentCache:
    """Compute this rank's share of the examples ``cache`` lacks, one shard at a time."""
    pending = [e for e in examples if e.id not in cache]
    if on_progress is not None:
        on_progress(len(examples) - len(pending))  # already cached by an earlier run
    pending = pending[rank::world_size]
    for start in range(0, len(pending), shard_size):
        chunk = pending[start : start + shard_size]
        latents: dict[str, torch.Tensor] = {}
        plans: dict[str, str] = {}
        tokens: dict[str, list[int]] = {}
        for first in range(0, len(chunk), batch_size):
            batch = chunk[first : first + batch_size]
            outputs = planner.generate(
                [templates.planner_prompt(e.question) for e in batch], sampler, batch_size=batch_size
            )
            for example, plan in zip(batch, outputs, strict=True):
                assert plan.latents is not None
                latents[example.id] = plan.latents
                plans[example.id] = plan.text
                tokens[example.id] = list(plan.token_ids)
            if on_progress is not None:
                on_progress(len(batch))
        cache.add(latents, plans, rank, tokens)
    return cache
