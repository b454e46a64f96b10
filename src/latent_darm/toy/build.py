"""Build the toy world once — data, tokenizer, trained planner and executor — and reuse it from a cache.

The cache entry is ``<cache_dir>/<config.fingerprint()>/``::

    world.json               config, fingerprint, timings (written last)
    data/{train,validation,test}.jsonl
    executor/                config.json, model.safetensors, generation_config.json, tokenizer, training_history.json
    planner/                 config.json, model.safetensors, tokenizer, training_history.json
    prefix-executor-<steps>/ (``prefix_executor``, built on first use by ``build_prefix_executor``) like
                             executor/: the executor fine-tuned with the plan at the latent slots as well

The executor is trained first: by default the planner starts from its weights (see ``WorldConfig.planner_init``).
Training runs on one CPU thread: on a small shared machine, two threads were many times slower than one.

Both model directories are ordinary checkpoints: ``load_llada`` / ``DiffusionLM.from_pretrained`` and
``AutoModelForCausalLM.from_pretrained`` open them. An entry is built in ``<cache_dir>/.<fingerprint>.partial/`` and
renamed into place only when complete, so a killed build never leaves a half entry that a later run would reuse;
a model whose training finished (its ``training_history.json`` is written last) is kept there, and the next build
of the same world starts after it, with the same result as an uninterrupted build. A lock file beside it lets one
process build a world while others wait and then reuse it.

``python -m latent_darm.toy.build [--quick] [--check]`` builds (or reuses) a world and, with ``--check``, measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from rich.console import Console
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError
from latent_darm.io import read_jsonl
from latent_darm.models.diffusion_lm import DiffusionLM, load_tokenizer
from latent_darm.models.llada.checkpoint import save_llada
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.models.safetensors_files import SINGLE_FILE, checked_weight_files
from latent_darm.threads import single_thread
from latent_darm.toy.mixtures import executor_examples, planner_examples
from latent_darm.toy.models import new_executor, new_planner, planner_from_executor
from latent_darm.toy.tokenizer import toy_tokenizer
from latent_darm.toy.world import SPLITS, ModelSpec, Split, ToyProblem, WorldConfig, generate_world, quick_config
from latent_darm.training.causal_sft import train_causal_sft
from latent_darm.training.diffusion_sft import train_diffusion_sft
from latent_darm.training.sft import SFTConfig, TrainHistory

HISTORY_FILE = "training_history.json"
PREFIX_EXECUTOR = "prefix-executor"
MANIFEST = "world.json"
TIMINGS_FILE = "timings.json"  # seconds per finished phase, kept in the partial directory for a resumed build


def default_cache_dir() -> Path:
    """``$LATENT_DARM_CACHE/toy``, else ``$XDG_CACHE_HOME/latent-darm/toy`` (``~/.cache`` by default)."""
    if "LATENT_DARM_CACHE" in os.environ:
        return Path(os.environ["LATENT_DARM_CACHE"]) / "toy"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent-darm" / "toy"


@dataclass
class WorldArtifacts:
    """A built world on disk. ``reused`` says whether it came from the cache; ``timings`` are the build's seconds
    per phase (of the build that made the entry)."""

    config: WorldConfig
    directory: Path
    reused: bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def planner_dir(self) -> Path:
        return self.directory / "planner"

    @property
    def executor_dir(self) -> Path:
        return self.directory / "executor"

    def prefix_executor_dir(self, steps: int) -> Path | None:
        """The plan-prefix executor fine-tuned for ``steps`` (with the gold plan where the latents go), if the
        world has one."""
        return self.directory / f"{PREFIX_EXECUTOR}-{steps}" if self.config.prefix_executor else None

    def problems(self, split: Split) -> list[ToyProblem]:
        return [ToyProblem(**record) for _, record in read_jsonl(self.directory / "data" / f"{split}.jsonl")]

    def plan_sampler(self) -> LLaDASamplerConfig:
        """The exact sampler settings the planner was trained for: one token per step over ``plan_length``."""
        c = self.config
        return LLaDASamplerConfig(gen_length=c.plan_length, block_length=c.block_length, steps=c.plan_length)

    def answer_sampler(self) -> LLaDASamplerConfig:
        """Settings for the planner acting as executor (short ``\\boxed{}`` answers)."""
        c = self.config
        return LLaDASamplerConfig(gen_length=c.answer_length, block_length=c.answer_length, steps=c.answer_length)

    def load_planner(self) -> DiffusionLM:
        return DiffusionLM.from_pretrained(self.planner_dir)

    def load_executor(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return _load_executor(self.executor_dir).eval(), load_tokenizer(self.executor_dir)

    def histories(self) -> dict[str, dict[str, Any]]:
        return {
            role: json.loads((self.directory / role / HISTORY_FILE).read_text()) for role in ("planner", "executor")
        }


def _sft_config(spec: ModelSpec, seed: int) -> SFTConfig:
    return SFTConfig(
        steps=spec.steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        warmup_steps=min(spec.warmup_steps, spec.steps),
        seed=seed,
    )


def _training_problems(problems: list[ToyProblem], spec: ModelSpec, seed: int) -> list[ToyProblem]:
    """A shuffled subset just large enough that training sees each example about once (tokenizing the rest
    would be wasted time)."""
    weights = asdict(spec.mixture)
    per_problem = max(sum(weights.values()), 1e-6)
    needed = min(len(problems), int(spec.steps * spec.batch_size / per_problem * 1.1) + 1)
    shuffled = list(problems)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:needed]


def _write_history(directory: Path, history: TrainHistory, spec: ModelSpec) -> None:
    payload = {"spec": asdict(spec), **history.to_dict()}
    (directory / HISTORY_FILE).write_text(json.dumps(payload) + "\n")


def _finished(directory: Path) -> bool:
    """A model directory whose training completed: its history is the last file written. The build writes
    safetensors only, so a directory without them (pickle weights someone put there) is not this build's and is
    trained again rather than read."""
    return (directory / HISTORY_FILE).exists() and (directory / SINGLE_FILE).exists()


def _load_executor(directory: Path) -> PreTrainedModel:
    """A causal executor of the world, from safetensors only (a pickle is never loaded: it can run code)."""
    if not (directory / SINGLE_FILE).exists():
        checked_weight_files(directory)  # one line: pickle-only, or no weights at all
    return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True)


def _build_into(config: WorldConfig, directory: Path, progress: bool) -> dict[str, float]:
    """Generate, train and save everything under ``directory``, keeping what an earlier, interrupted call there
    finished; returns seconds per phase (a kept phase reports the seconds it took when it ran)."""
    timings_file = directory / TIMINGS_FILE
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def finish(phase: str, started: float) -> None:
        timings[phase] = time.perf_counter() - started
        timings_file.write_text(json.dumps(timings) + "\n")

    started = time.perf_counter()
    splits = generate_world(config)  # deterministic and quick: written again rather than checked
    (directory / "data").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = "".join(json.dumps(p.to_dict()) + "\n" for p in splits[split])
        (directory / "data" / f"{split}.jsonl").write_text(lines)
    tokenizer = toy_tokenizer(splits["validation"] + splits["test"], nodes=config.nodes)
    timings["data"] = time.perf_counter() - started

    started = time.perf_counter()
    if _finished(directory / "executor"):
        if progress:
            Console(stderr=True).print(f"toy world: keeping the executor an interrupted build trained ({directory})")
        executor = _load_executor(directory / "executor")
    else:
        shutil.rmtree(directory / "executor", ignore_errors=True)
        executor = _train_executor(
            config, config.executor, splits["train"], tokenizer, directory / "executor", progress
        )
        finish("executor", started)

    started = time.perf_counter()
    if not _finished(directory / "planner"):
        shutil.rmtree(directory / "planner", ignore_errors=True)
        _train_planner(config, splits["train"], tokenizer, executor, directory / "planner", progress)
        finish("planner", started)
    return timings


def _train_planner(
    config: WorldConfig,
    problems: list[ToyProblem],
    tokenizer: PreTrainedTokenizerBase,
    executor: PreTrainedModel,
    directory: Path,
    progress: bool,
) -> None:
    """Train the diffusion planner (from the executor's weights, or fresh ones) and save it under ``directory``."""
    train = _training_problems(problems, config.planner, config.seed)
    examples = planner_examples(
        train,
        tokenizer,
        config.planner.mixture,
        plan_length=config.plan_length,
        answer_length=config.answer_length,
        seed=config.seed,
    )
    if config.planner_init == "executor":
        planner = planner_from_executor(executor, config.planner, tokenizer)
    else:
        planner = new_planner(config.planner, tokenizer, seed=config.seed)
    history = train_diffusion_sft(
        planner, examples, _sft_config(config.planner, config.seed), progress=progress, description="planner"
    )
    save_llada(planner, directory)
    tokenizer.save_pretrained(directory)
    _write_history(directory, history, config.planner)


def build_prefix_executor(artifacts: WorldArtifacts, steps: int, *, progress: bool = True) -> Path | None:
    """The plan-prefix executor of ``artifacts``' world (None when the config has none), built on first use: the
    trained executor fine-tuned for ``steps`` on its own mixture plus the ``latent`` task, saved atomically
    beside it in the world's entry (one process at a time; a killed build's leftovers are cleared by the next)."""
    config, final = artifacts.config, artifacts.prefix_executor_dir(steps)
    if final is None or _finished(final):
        return final
    spec = config.prefix_executor_spec(steps)
    with FileLock(_lock_path(final)):
        if _finished(final):  # built by another process while this one waited
            return final
        staging = _partial_path(final)
        shutil.rmtree(staging, ignore_errors=True)
        with single_thread():
            executor = _load_executor(artifacts.executor_dir)
            tokenizer = load_tokenizer(artifacts.executor_dir)
            _train_executor(config, spec, artifacts.problems("train"), tokenizer, staging, progress, executor)
        staging.rename(final)
    return final


def _partial_path(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


def _lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _train_executor(
    config: WorldConfig,
    spec: ModelSpec,
    problems: list[ToyProblem],
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    progress: bool,
    start: PreTrainedModel | None = None,
) -> PreTrainedModel:
    """Train one causal executor on ``spec``'s mixture (from ``start``'s weights, else fresh ones) and save it
    (with the tokenizer) under ``directory``."""
    train = _training_problems(problems, spec, config.seed + 1)
    examples = executor_examples(train, tokenizer, spec.mixture, plan_length=config.plan_length, seed=config.seed)
    executor = start if start is not None else new_executor(spec, tokenizer, seed=config.seed + 1)
    history = train_causal_sft(
        executor,
        examples,
        _sft_config(spec, config.seed + 1),
        prompt_loss_weight=spec.prompt_loss_weight,
        progress=progress,
        description=directory.name,
    )
    executor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _write_history(directory, history, spec)
    return executor


def _cached(config: WorldConfig, entry: Path) -> WorldArtifacts | None:
    """The finished entry of ``config``'s world, or None when it is not built yet."""
    manifest = entry / MANIFEST
    if not manifest.exists():
        return None
    try:
        timings = json.loads(manifest.read_text())["timings"]
    except (json.JSONDecodeError, KeyError):
        raise CheckpointError(f"{manifest}: corrupt toy-world manifest; delete {entry} to rebuild") from None
    return WorldArtifacts(config, entry, reused=True, timings=timings)


def build_world(config: WorldConfig, cache_dir: str | Path | None = None, *, progress: bool = True) -> WorldArtifacts:
    """The world of ``config``, from ``cache_dir`` when an entry with its fingerprint exists, else built (and
    cached), resuming an interrupted build of the same world. Models are trained on CPU or wherever torch's
    default device points."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / config.fingerprint()
    if (cached := _cached(config, final)) is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(_lock_path(final)):
        if (cached := _cached(config, final)) is not None:  # built by another process while this one waited
            return cached
        partial = _partial_path(final)
        partial.mkdir(exist_ok=True)
        with single_thread():
            timings = _build_into(config, partial, progress)
        timings["total"] = sum(timings.values())
        record = {"fingerprint": config.fingerprint(), "config": asdict(config), "timings": timings}
        (partial / TIMINGS_FILE).unlink(missing_ok=True)
        (partial / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        partial.rename(final)
    return WorldArtifacts(config, final, reused=False, timings=timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or reuse) the toy world; optionally measure it.")
    parser.add_argument("--quick", action="store_true", help="the small world used by tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help=f"cache directory (default {default_cache_dir()})")
    parser.add_argument("--check", action="store_true", help="measure planner and executor on the test split")
    parser.add_argument("--planner-steps", type=int, default=None, help="train the planner this long instead")
    parser.add_argument("--test-per-level", type=int, default=None, help="test questions per level instead")
    args = parser.parse_args(argv)
    config = quick_config(args.seed) if args.quick else WorldConfig(seed=args.seed)
    if args.planner_steps is not None:
        config = replace(config, planner=replace(config.planner, steps=args.planner_steps))
    if args.test_per_level is not None:
        config = replace(config, test_per_level=args.test_per_level)
    artifacts = build_world(config, args.cache)
    state = "reused" if artifacts.reused else "built"
    timings = {phase: round(seconds, 1) for phase, seconds in artifacts.timings.items()}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{state} {artifacts.directory}  seconds: {json.dumps(timings)}  load average: {load}", file=sys.stderr)
    if args.check:
        from latent_darm.toy.check import check_world

        torch.manual_seed(0)
        with single_thread():
            check_world(artifacts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
