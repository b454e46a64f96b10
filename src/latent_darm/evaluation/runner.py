"""Resumable, data-parallel evaluation of a pipeline on a list of examples.

A results directory holds ``config.json`` (everything that can change an answer: the pipeline's ``describe()``,
the benchmark, the subset and the grading settings) and ``results.jsonl`` (one graded item per line, appended and
fsynced as each item finishes). Rerunning with the same configuration computes only the items that are missing;
another configuration is refused, so two configurations never mix in one directory. A line torn by a kill is
dropped on resume, and an unreadable line elsewhere is moved to ``results.jsonl.bad`` with a notice; either way its
item is simply redone.

Under ``accelerate launch`` every process takes a deterministic share of the pending items and appends to its own
``results.rank{k}.jsonl``; the main process merges them into ``results.jsonl`` at the end.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latent_darm.config_diff import COSMETIC_KEYS, first_difference, short
from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import Example
from latent_darm.grading import ITEM_TIME_LIMIT_S, MATH_VERIFY_TIMEOUT_S, grade
from latent_darm.io import append_jsonl, atomic_write_json, atomic_write_text, on_full_disk, read_results_jsonl
from latent_darm.pipelines.base import Pipeline, PipelineResult
from latent_darm.progress import progress_bar

if TYPE_CHECKING:
    from accelerate import PartialState

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
PROMPT_FILE = "prompt.json"
RANK_PATTERN = "results.rank*.jsonl"
LOCK_FILE = ".lock"
# {role: fingerprint} of the weights behind the results (models.fingerprint); compared role by role on resume, and
# absent from directories written before fingerprints were recorded (those resume unchecked).
WEIGHTS_KEY = "weights"
# In float32 a row's answer does not depend on the batch it is in (tested); in bfloat16/float16 it can, so there a
# resume with another batch size is refused.
BATCH_KEY = "batch_size"


def cosmetic_keys(config: dict[str, Any]) -> frozenset[str]:
    """Top-level keys whose change a resume accepts for this configuration."""
    spec = config.get("spec")
    exact = isinstance(spec, dict) and spec.get("dtype", "float32") == "float32"
    return COSMETIC_KEYS | {BATCH_KEY} if exact else COSMETIC_KEYS


GRADING = {
    "grader": "latent_darm.grading",
    "math_verify_timeout_s": MATH_VERIFY_TIMEOUT_S,
    "item_time_limit_s": ITEM_TIME_LIMIT_S,
    "truncated_outputs": "anchored answers only",
}


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSummary:
    """Accuracy and mean cost per question over the finished items; ``computed`` counts this call's new items."""

    n: int
    correct: int
    mean_planner_tokens: float
    mean_executor_tokens: float
    mean_total_tokens: float
    mean_planner_forward_passes: float
    mean_executor_forward_passes: float
    seconds_per_question: float
    computed: int = 0
    truncated: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def truncation_rate(self) -> float:
        """Share of answers that hit the token budget before an end token."""
        return self.truncated / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "truncation_rate": self.truncation_rate}


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    return sum(float(r.get(key) or 0) for r in records) / len(records) if records else 0.0


def summarize(records: Sequence[dict[str, Any]], computed: int = 0) -> EvalSummary:
    """The paper's accounting over result records: tokens per stage, their sum, forward passes, wall time."""
    return EvalSummary(
        n=len(records),
        correct=sum(bool(r.get("correct")) for r in records),
        mean_planner_tokens=_mean(records, "planner_tokens"),
        mean_executor_tokens=_mean(records, "executor_tokens"),
        mean_total_tokens=_mean(records, "total_tokens"),
        mean_planner_forward_passes=_mean(records, "planner_forward_passes"),
        mean_executor_forward_passes=_mean(records, "executor_forward_passes"),
        seconds_per_question=_mean(records, "seconds"),
        computed=computed,
        truncated=sum(bool(r.get("truncated")) for r in records),
    )


# ----------------------------------------------------------------------------------------------------------------
# Results files
# ----------------------------------------------------------------------------------------------------------------


def _has_id(record: dict[str, Any]) -> str | None:
    return None if isinstance(record.get("id"), str) else "a result line needs a string 'id'"


def read_results(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Records of one results file (:func:`latent_darm.io.read_results_jsonl`): a torn last line is dropped, and
    with ``repair`` cut from the file and any other bad line moved to ``results.jsonl.bad``, so its item is redone
    and later appends start on a clean line."""
    return read_results_jsonl(path, _has_id, repair=repair)


def result_files(out_dir: Path) -> list[Path]:
    """``results.jsonl`` first, then the per-process files of an unmerged data-parallel run."""
    return [out_dir / RESULTS_FILE, *sorted(out_dir.glob(RANK_PATTERN))]


def load_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every finished item of a directory by id (first occurrence wins), merged or not."""
    finished: dict[str, dict[str, Any]] = {}
    for path in result_files(out_dir):
        for record in read_results(path):
            finished.setdefault(record["id"], record)
    return finished


def merge_results(out_dir: Path, order: Sequence[str] = ()) -> None:
    """Fold the per-process files into ``results.jsonl`` (deduplicated by id, in ``order`` first), atomically,
    then delete them; a kill between the two steps only leaves duplicates that the next merge drops."""
    rank_files = sorted(out_dir.glob(RANK_PATTERN))
    if not rank_files:
        return
    finished = load_results(out_dir)
    position = {item_id: index for index, item_id in enumerate(order)}
    records = sorted(finished.values(), key=lambda r: position.get(r["id"], len(position)))
    atomic_write_text(out_dir / RESULTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for path in rank_files:
        path.unlink()


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


def prompt_record(pipeline: Pipeline, examples: Sequence[Example]) -> tuple[str, dict[str, Any]]:
    """(hash, record) of the rendered prompts. The hash covers each answer type's prompts rendered around the
    placeholder ``{question}`` (chat template, system turn and templates, not the questions), so a resume with a
    different rendering is refused; the record also keeps the first item's exact prompts, for inspection."""
    types = sorted({e.answer_type for e in examples})
    rendered = {t: pipeline.rendered_prompts("{question}", t) for t in types}  # type: ignore[arg-type]
    digest = hashlib.sha256(json.dumps(rendered, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    first = examples[0] if examples else None
    record: dict[str, Any] = {"sha256": digest, "templates": rendered}
    if first is not None:
        record["first_item"] = {
            "id": first.id,
            "prompts": pipeline.rendered_prompts(first.question, first.answer_type),  # type: ignore[arg-type]
        }
    return digest, record


def examples_fingerprint(examples: Sequence[Example]) -> dict[str, Any]:
    """Count and hash of the selected questions and golds: an edited data file is a different configuration."""
    rows = sorted([e.id, e.question, e.gold, e.answer_type] for e in examples)
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    return {"n": len(examples), "sha256": digest[:16]}


def read_config(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable configuration ({exc})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    return config


def check_run_config(out_dir: Path, config: dict[str, Any], *, partial: bool = False) -> dict[str, Any] | None:
    """The stored configuration if it matches ``config``; None for a fresh directory; otherwise a ConfigError
    naming the first differing key. ``partial`` compares only the top-level keys ``config`` has (a check before
    the models are loaded, when ``pipeline.describe()`` is not known yet)."""
    stored = read_config(out_dir)
    if stored is None:
        if any(path.exists() for path in result_files(out_dir)):
            raise DataError(f"{out_dir}: has results but no {CONFIG_FILE}; use another --out directory")
        return None
    _check_weights(out_dir, stored, config)
    stored = stored_in_todays_layout(stored)
    compared = {key: value for key, value in stored.items() if key in config} if partial else stored
    compared = {key: value for key, value in compared.items() if key != WEIGHTS_KEY}
    wanted = {key: value for key, value in json.loads(json.dumps(config)).items() if key != WEIGHTS_KEY}
    difference = first_difference(compared, wanted, cosmetic_keys(config))
    if difference is not None:
        key, old, new = difference
        raise ConfigError(
            f"{out_dir} holds results of another configuration ({key}: {short(old)} there, {short(new)} now); "
            "use another --out directory"
        )
    return stored


def stored_in_todays_layout(value: Any) -> Any:
    """A stored configuration as today's code writes it: sampler settings stored before lookahead took over
    latent_tokens, and before each planner family had its own settings (every family's, at their defaults), are
    read as their family's (``models.family``), so such a run still resumes."""
    from latent_darm.models.family import current_sampler_dict, renamed_settings

    if isinstance(value, list):
        return [stored_in_todays_layout(item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("kind") == "ddlm" and "sampler" not in value:  # a spec's diffusion role: settings beside "model"
        value = renamed_settings(value)
    return {
        key: current_sampler_dict(item)
        if key == "sampler" and isinstance(item, dict)
        else stored_in_todays_layout(item)
        for key, item in value.items()
    }


def _check_weights(out_dir: Path, stored: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to resume when a model's weights differ from those that produced the stored results."""
    old, new = stored.get(WEIGHTS_KEY), config.get(WEIGHTS_KEY)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return
    for role, fingerprint in new.items():
        if role in old and old[role] != fingerprint:
            spec = config.get("spec") or {}
            model = spec.get(role) if role == "projector" else (spec.get(role) or {}).get("model")
            raise ConfigError(
                f"{out_dir} holds results of other {role} weights: {model or role} changed since they were written "
                f"(fingerprint {old[role]} there, {fingerprint} now); use another --out directory"
            )


# ----------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel run, and a barrier across all of them."""

    rank: int
    world: int
    barrier: Callable[[], None]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _no_barrier() -> None:
    return None


def accelerate_state() -> PartialState:
    """accelerate's process state; CPU processes (no CUDA, or ``accelerate launch --cpu``) join a gloo group,
    which ``PartialState()`` alone would not do."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def current_processes(shard: tuple[int, int] | None = None, barrier: Callable[[], None] | None = None) -> Processes:
    """From ``accelerate`` (``accelerate launch`` / ``torchrun`` set the ranks), or injected as
    ``shard=(rank, world)``."""
    if shard is None:
        state = accelerate_state()
        return Processes(state.process_index, state.num_processes, barrier or state.wait_for_everyone)
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    return Processes(rank, world, barrier or _no_barrier)


def shard_items(items: Sequence[Example], rank: int, world: int) -> list[Example]:
    """Every ``world``-th pending item from ``rank``: deterministic, and balanced even on resume."""
    return list(items[rank::world])


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------


def result_record(example: Example, result: PipelineResult) -> dict[str, Any]:
    """One results line: the pipeline's output and accounting, graded, with the example's gold and meta."""
    graded = grade(result.output, example.gold, example.answer_type, truncated=result.truncated)
    record = {"id": example.id, **result.to_dict()}
    record.update(
        question=example.question,
        answer_type=example.answer_type,
        gold=example.gold,
        extracted=graded.extracted,
        correct=graded.correct,
        ungradable=graded.ungradable,
        seconds=round(result.accounting.seconds, 4),
        meta=example.meta,
    )
    return record


def _batches(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
    """Consecutive batches of one answer type each (a pipeline call takes a single answer type)."""
    batch: list[Example] = []
    for example in examples:
        if batch and (len(batch) == size or example.answer_type != batch[0].answer_type):
            yield batch
            batch = []
        batch.append(example)
    if batch:
        yield batch


def _check_ids(examples: Sequence[Example]) -> None:
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise DataError(f"example id {example.id!r} occurs twice; results are keyed by id")
        seen.add(example.id)


def evaluate(
    pipeline: Pipeline,
    examples: list[Example],
    out_dir: Path,
    *,
    batch_size: int,
    config: dict[str, Any],
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
) -> EvalSummary:
    """Answer and grade every example not yet in ``out_dir``; return the summary over all of ``examples``.

    ``config`` (benchmark, subset, grading, spec, ...) is stored with ``pipeline.describe()`` under ``pipeline`` and
    the grader settings under ``grading``. ``shard=(rank, world)`` and ``barrier`` stand in for accelerate's
    process group (tests, or custom launchers).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    _check_ids(examples)
    out_dir = Path(out_dir)
    prompt_sha256, prompts = prompt_record(pipeline, examples)
    full_config = {**config, "pipeline": pipeline.describe(), "grading": GRADING, "prompt_sha256": prompt_sha256}
    processes = current_processes(shard, barrier)

    stored = check_run_config(out_dir, full_config)  # every process checks, so every process raises alike
    own_file = out_dir / (RESULTS_FILE if processes.world == 1 else f"results.rank{processes.rank}.jsonl")
    with _exclusive(out_dir, processes.is_main):
        if processes.is_main:
            if stored != json.loads(json.dumps(full_config)):  # new directory, or a new label
                atomic_write_json(out_dir / CONFIG_FILE, full_config)
            if not (out_dir / PROMPT_FILE).exists():
                atomic_write_json(out_dir / PROMPT_FILE, prompts)
            read_results(out_dir / RESULTS_FILE, repair=True)
        processes.barrier()
        if own_file.name != RESULTS_FILE:
            read_results(own_file, repair=True)
        finished = load_results(out_dir)
        processes.barrier()  # nobody appends before everyone has read the same finished set

        pending = [e for e in examples if e.id not in finished]
        mine = shard_items(pending, processes.rank, processes.world)

        def disk_full() -> str:  # counts what was kept only once the disk is full
            return (
                f"disk full while writing results to {own_file}; the {len(load_results(out_dir))} results finished "
                "before it are kept: free space and rerun the same command to resume"
            )

        with on_full_disk(own_file, disk_full, restate=True):
            _answer(pipeline, mine, own_file, batch_size, progress and processes.is_main)

        processes.barrier()
        if processes.is_main:
            merge_results(out_dir, [e.id for e in examples])
        processes.barrier()
        finished = load_results(out_dir)
        done = [finished[e.id] for e in examples if e.id in finished]
        summary = summarize(done, computed=len(done) - (len(examples) - len(pending)))
        if processes.is_main:
            atomic_write_json(out_dir / SUMMARY_FILE, summary.to_dict())
    return summary


# What ``evaluate`` adds to the command's configuration once the pipeline is built.
PIPELINE_KEYS = ("pipeline", "grading", "prompt_sha256")


def finished_summary(out_dir: Path, examples: Sequence[Example], config: dict[str, Any], *, write: bool = True) -> (
    EvalSummary | None
):  # fmt: skip
    """The summary of a run in ``out_dir`` that already holds a result for every example under exactly ``config``
    (and today's grading), without building the pipeline: a finished run is reported without loading a model. None
    when anything is left to do (an item missing, unmerged per-process files, a new label or layout to store), and
    ``evaluate`` takes over. ``write``: store ``summary.json`` as ``evaluate`` would (the main process)."""
    out_dir = Path(out_dir)
    stored = read_config(out_dir)
    wanted = json.loads(json.dumps(config))
    if stored is None or sorted(out_dir.glob(RANK_PATTERN)) or stored.get("grading") != GRADING:
        return None
    if {k: v for k, v in stored.items() if k not in PIPELINE_KEYS} != wanted:
        return None
    finished = load_results(out_dir)
    if any(e.id not in finished for e in examples):
        return None
    summary = summarize([finished[e.id] for e in examples])
    if write:
        with _exclusive(out_dir, True):
            atomic_write_json(out_dir / SUMMARY_FILE, summary.to_dict())
    return summary


@contextmanager
def _exclusive(out_dir: Path, take: bool) -> Iterator[None]:
    """An advisory lock on the directory for the main process, so a second launch into the same directory is
    refused instead of duplicating work; the OS drops it if the process dies."""
    if not take:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{out_dir}: another evaluation is writing to this directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _answer(pipeline: Pipeline, examples: list[Example], path: Path, batch_size: int, show: bool) -> int:
    """Run the pipeline batch by batch, appending each graded item as soon as its batch returns."""
    done = 0
    with progress_bar(show) as bar:
        name = getattr(pipeline, "name", type(pipeline).__name__)
        task = bar.add_task(f"answering ({name})", total=len(examples))
        for batch in _batches(examples, batch_size):
            results = pipeline.run([e.question for e in batch], batch[0].answer_type, batch_size=batch_size)
            if len(results) != len(batch):
                raise RuntimeError(f"pipeline {name} returned {len(results)} results for {len(batch)}")
            for example, result in zip(batch, results, strict=True):
                append_jsonl(path, result_record(example, result))
                done += 1
            bar.advance(task, len(batch))
    return done
