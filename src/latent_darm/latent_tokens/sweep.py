"""``darm latent-tokens`` as a library: build (or reuse) the world, train (or reuse, or resume) every variant,
evaluate each variant and knob value on the test split, and hand the records to the report.

Cache layout, ``<cache>/<world fingerprint>/``::

    world.json, data/{train,test}.jsonl, tokenizer/       the puzzles (written into a temp dir, renamed in place)
    models/<training fingerprint>/<variant>/             model/ (LLaDA checkpoint + tokenizer), history.json

Results go to ``<out>/results.jsonl``, one line per (variant, knob value), appended as each finishes; a rerun
skips the lines whose key (world, training, decoding, test set, variant, value) is already there. A line torn by a
kill is dropped and any other unreadable line moved to ``results.jsonl.bad`` (with a notice); both are recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from latent_darm.errors import ConfigError
from latent_darm.evaluation.report import wilson_interval
from latent_darm.io import append_jsonl, atomic_write_json, read_results_jsonl
from latent_darm.latent_tokens.curves import Curve, curve_summary, read_curve
from latent_darm.latent_tokens.decoding import DecodeSettings
from latent_darm.latent_tokens.tasks import (
    Puzzle,
    WorldConfig,
    encode_rows,
    generate_splits,
    grade,
    load_split,
    save_split,
)
from latent_darm.latent_tokens.tokenizer import puzzle_tokenizer
from latent_darm.latent_tokens.train import TrainSettings, final_loss, is_trained, train_variant
from latent_darm.latent_tokens.variants import SWEEPS, VARIANTS, Sweep, Value, default_variants, get_variant
from latent_darm.progress import progress_bar
from latent_darm.seeds import check_seed_list
from latent_darm.threads import single_thread

if TYPE_CHECKING:
    from rich.progress import Progress

RESULTS_FILE = "results.jsonl"
MTP_MODELS = ("per-window", "shared")
ALL = "all"


@dataclass(frozen=True)
class RunSettings:
    """One run: the world, the shared training recipe, the variants, the knob values and how to decode."""

    world: WorldConfig
    train: TrainSettings
    variants: tuple[str, ...] = field(default_factory=default_variants)  # names in the registry (:mod:`.variants`)
    latent_values: tuple[Value, ...] | None = None  # SCDM's n; None = 0, 1, 2, 4, … below the answer, and all
    windows: tuple[Value, ...] | None = None  # AR+MTP's w; None = 1, 2, 4, … below the answer, and all
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    eval_batch: int = 256
    seeds: tuple[int, ...] | None = None  # training + decoding seeds, one model per variant each; None = (train.seed,)
    mtp_models: str = "per-window"  # AR+MTP: one model per swept w (the authors), or "shared" (one, w drawn per row)

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError(f"--variants: '' names no variant; expected some of {', '.join(VARIANTS)}")
        if self.mtp_models not in MTP_MODELS:
            raise ConfigError(f"--mtp-models: {self.mtp_models!r} is not one of {', '.join(MTP_MODELS)}")
        for name in self.variants:
            try:
                get_variant(name)
            except ConfigError as exc:
                raise ConfigError(f"--variants: {exc}") from None
        candidates = self.decode.candidates
        if candidates is not None and candidates > self.world.answer_length:
            raise ConfigError(
                f"--candidates: {candidates} exceeds the answer length {self.world.answer_length}; use 'all'"
            )
        self._check_seeds()
        for sweep in SWEEPS:
            sweep.check(getattr(self, sweep.field) or (), self.world.answer_length, self.decode.k)

    def _check_seeds(self) -> None:
        check_seed_list(self.seeds)

    def swept(self, sweep: Sweep) -> tuple[Value, ...]:
        """The values of ``sweep``'s knob this run evaluates: the ones given, else its defaults."""
        given = getattr(self, sweep.field)
        return given if given is not None else sweep.defaults(self.world.answer_length, self.decode.k)

    def knobs(self, variant: str) -> list[tuple[str | None, Value]]:
        """(knob name, value) pairs evaluated for ``variant``."""
        spec = get_variant(variant)
        if spec.sweep is None:
            return [(spec.knob, spec.value)]
        return [(spec.knob, v) for v in self.swept(spec.sweep)]

    def decodes(self, variant: str) -> list[DecodeSettings]:
        """The run's decoding, and for a variant ``also_by_confidence`` (MDM, SIDM) under a random order also the
        authors' MDM/SIDM rule (top probability over all masked positions), so both are reported side by side."""
        if get_variant(variant).also_by_confidence and self.decode.selection == "random":
            return [self.decode, replace(self.decode, selection="confidence", candidates=None)]
        return [self.decode]

    def recipe(self, train: TrainSettings, variant: str, value: Value) -> TrainSettings:
        """The training settings of the model that evaluates ``variant`` at ``value``: under per-window AR+MTP
        (the authors: one model per w) ``mtp_window`` = w (all = the answer length, so every remaining cell)."""
        if not get_variant(variant).one_model_per_window or self.mtp_models == "shared":
            return train
        return replace(train, mtp_window=self.world.answer_length if value is None else value)

    def trainings(self, train: TrainSettings) -> list[tuple[str, TrainSettings]]:
        """(variant, training settings) of every model the run needs, each once, in order."""
        out: list[tuple[str, TrainSettings]] = []
        for variant in self.variants:
            for _, value in self.knobs(variant):
                item = (variant, self.recipe(train, variant, value))
                if item not in out:
                    out.append(item)
        return out

    def run_seeds(self) -> tuple[int, ...]:
        return self.seeds if self.seeds is not None else (self.train.seed,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "world": asdict(self.world),
            "train": asdict(self.train),
            "variants": list(self.variants),
            **{sweep.field: [label(v) for v in self.swept(sweep)] for sweep in SWEEPS},
            "decode": asdict(self.decode),
            "eval_batch": self.eval_batch,
            "seeds": list(self.run_seeds()),
            "mtp_models": self.mtp_models,
        }


def label(value: tuple[str | None, Value] | Value) -> str:
    if isinstance(value, tuple):
        value = value[1]
    return ALL if value is None else str(value)


def default_cache_dir() -> Path:
    """``$LATENT_DARM_CACHE/latent-tokens``, else ``$XDG_CACHE_HOME/latent-darm/latent-tokens``."""
    if "LATENT_DARM_CACHE" in os.environ:
        return Path(os.environ["LATENT_DARM_CACHE"]) / "latent-tokens"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent-darm" / "latent-tokens"


def _bar(progress: bool) -> Progress:
    return progress_bar(progress)


def build_world(config: WorldConfig, cache_dir: Path, progress: bool) -> Path:
    """The world's cache entry, generated into a temp sibling and renamed into place when complete."""
    final = cache_dir / config.fingerprint()
    if (final / "world.json").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache_dir))
    try:
        started = time.perf_counter()
        with _bar(progress) as bar:
            task = bar.add_task("generating puzzles", total=config.train_size + config.test_size)
            splits = generate_splits(config, on_progress=lambda n: bar.advance(task, n))
        (staging / "data").mkdir()
        for split, puzzles in splits.items():
            save_split(staging / "data" / f"{split}.jsonl", puzzles)
        puzzle_tokenizer().save_pretrained(staging / "tokenizer")
        record = {
            "config": asdict(config),
            "fingerprint": config.fingerprint(),
            "seconds": time.perf_counter() - started,
        }
        atomic_write_json(staging / "world.json", record)
        if final.exists():  # an incomplete entry from an older layout: replace it
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


@dataclass
class RunOutcome:
    records: list[dict[str, Any]]
    seconds: dict[str, float]
    world_dir: Path
    reused_models: list[str]
    curves: list[Curve] = field(default_factory=list)  # every trained model's loss curves, in training order


def evaluation_key(
    settings: RunSettings,
    test: list[Puzzle],
    variant: str,
    value: Value,
    device: str,
    dtype: str,
    *,
    train: TrainSettings | None = None,
    decode: DecodeSettings | None = None,
) -> str:
    payload = {
        "world": settings.world.fingerprint(),
        "train": (train or settings.train).fingerprint(),
        "decode": asdict(decode or settings.decode),
        "test": hashlib.sha256("\n".join(p.puzzle for p in test).encode()).hexdigest()[:16],
        "variant": variant,
        "value": label(value),
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def evaluate(
    model: torch.nn.Module,
    settings: RunSettings,
    test: list[Puzzle],
    variant: str,
    value: Value,
    on_batch: Callable[[int], None] | None = None,
    *,
    decode: DecodeSettings | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Decode ``test`` with ``variant`` at knob ``value``; accuracy, interval and cost per puzzle."""
    world = settings.world
    decode = decode or settings.decode
    spec = get_variant(variant)
    rows = encode_rows(world, test)
    prompts = rows[:, : world.prompt_length]
    generator = torch.Generator().manual_seed(world.seed if seed is None else seed)
    correct = passes = tokens = 0
    started = time.perf_counter()
    for start in range(0, len(test), settings.eval_batch):
        chunk = prompts[start : start + settings.eval_batch]
        out = spec.decode(model, chunk, world.answer_length, value, decode, generator)
        for i, answer in enumerate(out.answers.tolist()):
            correct += grade(world, test[start + i], answer)
        passes += out.forward_passes * len(chunk)
        tokens += out.tokens * len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    seconds = time.perf_counter() - started
    low, high = wilson_interval(correct, len(test))
    return {
        "correct": correct,
        "n": len(test),
        "accuracy": correct / len(test),
        "ci_low": low,
        "ci_high": high,
        "forward_passes": passes / len(test),
        "tokens_per_pass": tokens / passes,
        "seconds_per_puzzle": seconds / len(test),
    }


def latent_count(settings: RunSettings, variant: str, value: Value) -> int:
    """Latent tokens per step for the figure's x axis: masked positions in a pass besides the decoded one(s) at the
    first step ('all' = answer length − k; AR+MTP's w → w − 1)."""
    return get_variant(variant).latent_count(value, settings.world.answer_length - settings.decode.k)


def _has_key(record: dict[str, Any]) -> str | None:
    return None if isinstance(record.get("key"), str) else "a result line needs a string 'key'"


def run(
    settings: RunSettings,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    test_puzzles: list[Puzzle] | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> RunOutcome:
    """Everything; each phase reuses what the cache and ``out_dir`` already hold."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    world_dir = build_world(settings.world, cache_dir, progress)
    seconds["world"] = time.perf_counter() - started
    train_rows = encode_rows(settings.world, load_split(world_dir / "data" / "train.jsonl"))
    heldout_rows = encode_rows(settings.world, load_split(world_dir / "data" / "test.jsonl"))  # never trained on
    test = test_puzzles if test_puzzles is not None else load_split(world_dir / "data" / "test.jsonl")
    dtype_name = str(dtype).removeprefix("torch.")
    autocast = dtype if dtype != torch.float32 and device != "cpu" else None
    seeds = settings.run_seeds()
    reused: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    done = {r["key"]: r for r in read_results_jsonl(results_path, _has_key, repair=True, say=log)}
    records: list[dict[str, Any]] = []
    curves: list[Curve] = []
    seconds.update(train=0.0, evaluate=0.0)
    test_rows = encode_rows(settings.world, test)
    with single_thread(enabled=device == "cpu"):
        for seed in seeds:
            train = replace(settings.train, seed=seed)
            tag = "" if len(seeds) == 1 else f" (seed {seed})"
            models: dict[str, torch.nn.Module] = {}
            losses: dict[str, float | None] = {}
            summaries: dict[str, dict[str, Any]] = {}
            phase = time.perf_counter()
            with _bar(progress) as bar:
                for variant, recipe in settings.trainings(train):
                    directory = world_dir / "models" / recipe.fingerprint() / variant
                    name = variant + ("" if recipe.mtp_window is None else f" w={recipe.mtp_window}") + tag
                    if is_trained(directory):
                        reused.append(name)
                    task = bar.add_task(f"train {name}", total=recipe.steps)
                    model = train_variant(
                        variant,
                        train_rows,
                        settings.world.prompt_length,
                        recipe,
                        directory,
                        device=device,
                        autocast_dtype=autocast,
                        on_step=lambda n, task=task: bar.advance(task, n),
                        log=log,
                        heldout=heldout_rows,
                    )
                    bar.update(task, completed=recipe.steps)
                    curve = read_curve(directory, name.removesuffix(tag))
                    if curve is not None:
                        curves.append(curve)
                        summaries[recipe.fingerprint() + variant] = curve_summary(curve)
                    models[recipe.fingerprint() + variant] = model.to(device=device, dtype=dtype).eval()
                    losses[recipe.fingerprint() + variant] = final_loss(directory)
            seconds["train"] += time.perf_counter() - phase
            phase = time.perf_counter()
            diagnostics: dict[tuple[str, Value], dict[str, Any] | None] = {}  # per model and knob value
            with _bar(progress) as bar:
                for variant in settings.variants:
                    spec = get_variant(variant)
                    for decode in settings.decodes(variant):
                        for knob, value in settings.knobs(variant):
                            recipe = settings.recipe(train, variant, value)
                            model_key = recipe.fingerprint() + variant
                            model = models[model_key]
                            key = evaluation_key(
                                settings, test, variant, value, device, dtype_name, train=recipe, decode=decode
                            )
                            if key in done:
                                records.append(done[key])
                                continue
                            name = (variant if knob is None else f"{variant} {knob}={label(value)}") + tag
                            task = bar.add_task(f"evaluate {name}, {decode.label()}", total=len(test))
                            result = evaluate(
                                model, settings, test, variant, value,
                                lambda n, t=task: bar.advance(t, n), decode=decode, seed=seed,
                            )  # fmt: skip
                            if (model_key, value) not in diagnostics:  # the same under every decoding rule
                                diagnostics[model_key, value] = spec.one_step(
                                    model, test_rows, settings.world.prompt_length, value,
                                    torch.Generator().manual_seed(seed), settings.eval_batch,
                                )  # fmt: skip
                            record = {
                                "key": key,
                                "variant": variant,
                                "knob": knob,
                                "value": None if knob is None else label(value),
                                "selection": spec.selection(decode),
                                "primary": decode == settings.decode,
                                "seed": seed,
                                "latent_tokens": latent_count(settings, variant, value),
                                **result,
                                "final_loss": losses[model_key],
                                "curve": summaries.get(model_key),
                                "one_step": diagnostics[model_key, value],
                                "device": device,
                                "dtype": dtype_name,
                            }
                            append_jsonl(results_path, record)
                            records.append(record)
            seconds["evaluate"] += time.perf_counter() - phase
    seconds["total"] = time.perf_counter() - started
    log(f"models {'reused: ' + ', '.join(reused) if reused else 'trained'}; results in {results_path}")
    return RunOutcome(records, seconds, world_dir, reused, curves)
