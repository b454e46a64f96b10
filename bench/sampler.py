"""Side-by-side benchmark of the diffusion sampler: the naive reference loop, exact mode and the fast modes.

For every (gen length, batch size) it runs, on the same weights and prompts:
the plain port of ML-GSAI/LLaDA ``generate()`` one prompt at a time (``tests/reference_llada.py``), then this
package's sampler in exact mode (batched), threshold mode, prefix cache and dual cache (with and without the
threshold). It reports tokens/s, forward passes, peak memory, speed relative to the naive loop and token agreement
with exact mode, and checks that exact mode reproduces the naive loop's tokens.

On CPU each configuration runs in its own fresh worker process, so its peak resident-set growth is its own; the
repeats of all modes of one (gen length, batch) are interleaved, so load from other processes on a shared machine
hits every mode alike. On CUDA everything runs in this process and the allocator's peak statistics are used.

    python bench/sampler.py                      # 60M random model, gen 64/256, batch 1/8 (tens of minutes on 2 cores)
    python bench/sampler.py --quick              # tiny model, gen 32: a smoke run of a few seconds
    python bench/sampler.py --planner DIR        # a trained LLaDA-layout checkpoint instead of random weights
    python bench/sampler.py --device cuda --dtype bfloat16 --shape 8b   # the LLaDA-8B shape, random bf16 weights
    python bench/sampler.py --family dream       # a random Dream-shaped model: official loop, exact, τ, prefix cache
    python bench/sampler.py --modes exact dual --baseline-src /tmp/old/src   # before/after a change, interleaved

``--baseline-src DIR`` adds a "(before)" copy of every selected mode (but the naive loop) that runs the
``latent_darm`` package found in DIR (e.g. ``git archive main src | tar -x -C /tmp/old``) in its own worker, so
old and new code are measured in one run under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.llada.sampler import llada_generate
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SpecialIds

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sampler_dream

REPO_ROOT = Path(__file__).resolve().parents[1]

# Random-model shapes. "small" is the 50–100M model of the issue; "8b" is the published LLaDA-8B config.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=384, vocab_size=4096),
    "small": dict(d_model=512, n_heads=8, n_layers=8, mlp_hidden_size=1536, vocab_size=32000),
    "8b": dict(
        d_model=4096,
        n_heads=32,
        n_kv_heads=32,
        n_layers=32,
        mlp_hidden_size=12288,
        vocab_size=126464,
        mask_token_id=126336,
        eos_token_id=126081,
    ),
}

# Built-in prompts for --planner runs without --prompts-file.
DEFAULT_PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "What is the value of x if 3x + 7 = 22?",
    "Tom has 5 apples and buys 7 more. He gives 4 to his sister. How many apples does he have now?",
    "A rectangle is 8 cm long and 5 cm wide. What is its area?",
    "Sara reads 12 pages a day. How many days does she need for a 180-page book?",
    "If a shirt costs $20 and is on sale for 25% off, what is the sale price?",
    "The sum of two consecutive integers is 41. What are the integers?",
]


@dataclass(frozen=True)
class Mode:
    """One way of sampling: the naive reference loop, or this sampler with some approximations switched on."""

    name: str
    threshold: float | None = None
    cache: str = "none"  # none | prefix | dual
    naive: bool = False
    key: str = ""
    baseline: str | None = None  # a source directory whose latent_darm package runs this mode instead

    def sampler_config(self, gen_length: int, block_length: int) -> LLaDASamplerConfig:
        return LLaDASamplerConfig(
            gen_length=gen_length,
            block_length=block_length,
            steps=gen_length,
            threshold=self.threshold,
            cache=self.cache,
        )


MODE_KEYS = ("naive", "exact", "threshold", "prefix", "prefix+threshold", "dual", "dual+threshold")
DREAM_MODE_KEYS = ("naive", "exact", "threshold", "prefix", "prefix+threshold")  # no blocks, so no dual cache


def benchmark_modes(
    threshold: float, keys: Sequence[str] = MODE_KEYS, baseline: str | None = None, family: str = "llada"
) -> list[Mode]:
    if family == "dream":
        keys = [key for key in keys if key in DREAM_MODE_KEYS]
    modes = [
        Mode("naive loop", naive=True, key="naive"),
        Mode("exact", key="exact"),
        Mode(f"τ {threshold:g}", threshold=threshold, key="threshold"),
        Mode("prefix", cache="prefix", key="prefix"),
        Mode(f"prefix + τ {threshold:g}", threshold=threshold, cache="prefix", key="prefix+threshold"),
        Mode("dual", cache="dual", key="dual"),
        Mode(f"dual + τ {threshold:g}", threshold=threshold, cache="dual", key="dual+threshold"),
    ]
    chosen = [mode for mode in modes if mode.key in keys]
    if baseline is not None:
        before = [replace(m, name=f"{m.name} (before)", baseline=baseline) for m in chosen if not m.naive]
        chosen = [m for pair in zip(before, [m for m in chosen if not m.naive], strict=True) for m in pair] + [
            m for m in chosen if m.naive
        ]
    return chosen


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything needed to rebuild the same model and prompts in a fresh process."""

    shape: str
    planner: str | None
    device: str
    dtype: str
    prompt_length: int
    max_batch: int
    seed: int
    init_std: float | None
    prompts_file: str | None
    threads: int | None
    family: str = "llada"


@dataclass
class Workload:
    model: LLaDAModelLM
    prompts: torch.Tensor  # [max_batch, P], left-padded
    attention_mask: torch.Tensor | None  # None when no row is padded
    ids: SpecialIds
    info: dict[str, Any]


def random_model(config: LLaDAConfig, device: torch.device, dtype: torch.dtype, seed: int, std: float) -> LLaDAModelLM:
    """Random weights drawn as ``latent_darm.models.tiny.random_llada`` draws them (norm weights ~ 1 + 0.1·N(0, 1),
    the rest ~ std·N(0, 1)), but built on the meta device and filled in place on the target device and dtype.

    8B random weights then take seconds instead of a CPU init and a 32 GB copy, and every CPU run exercises the
    very code that builds the 8B model on a GPU. (It also spares each worker the transformers import of ``tiny``.)
    """
    with torch.device("meta"):
        model = LLaDAModelLM(config).to(dtype)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                param.normal_(1.0, 0.1, generator=generator)
            else:
                param.normal_(0.0, std, generator=generator)
    return model.eval()


def random_config(shape: str) -> LLaDAConfig:
    """The config of a random-model shape; special ids default to the top of the vocabulary."""
    values = dict(SHAPES[shape])
    values.setdefault("mask_token_id", values["vocab_size"] - 1)
    values.setdefault("eos_token_id", values["vocab_size"] - 2)
    return LLaDAConfig(max_sequence_length=4096, rope_theta=500000.0, **values)


def random_std(spec: WorkloadSpec, config: LLaDAConfig) -> float:
    """Same logit spread at every width (std·√d_model fixed), so τ fires about as often on every shape."""
    return spec.init_std if spec.init_std is not None else 0.2 * math.sqrt(512 / config.d_model)


def describe(spec: WorkloadSpec) -> dict[str, Any]:
    """The workload's model, for the report, without materialising any weights."""
    if spec.family == "dream":
        return sampler_dream.describe(spec.shape, spec.init_std)
    if spec.planner is not None:
        config = LLaDAConfig.from_json_file(Path(spec.planner) / "config.json")
        source: dict[str, Any] = {"source": spec.planner}
    else:
        config = random_config(spec.shape)
        source = {"source": f"random ({spec.shape})", "init_std": random_std(spec, config)}
    with torch.device("meta"):
        parameters = sum(p.numel() for p in LLaDAModelLM(config).parameters())
    return {**source, "parameters": parameters, **config.to_dict()}


def build_workload(spec: WorkloadSpec) -> Workload:
    """The model and the prompts (rows 0..max_batch-1; a batch of b takes the first b)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device, dtype = torch.device(spec.device), getattr(torch, spec.dtype)
    if spec.planner is not None:
        return _planner_workload(spec, device, dtype)
    if spec.family == "dream":
        dream = sampler_dream.random_model(spec.shape, device, dtype, spec.seed, spec.init_std)
        dream_ids = sampler_dream.special_ids(dream)
        generator = torch.Generator().manual_seed(spec.seed + 1)
        low = min(dream_ids.mask, dream_ids.eos)
        prompts = torch.randint(0, low, (spec.max_batch, spec.prompt_length), generator=generator)
        return Workload(dream, prompts.to(device), None, dream_ids, describe(spec))
    config = random_config(spec.shape)
    model = random_model(config, device, dtype, spec.seed, random_std(spec, config))
    ids = SpecialIds(mask=config.mask_token_id, eos=config.eos_token_id)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    # Ids below both special tokens: a prompt must not contain the mask, and an EOS would be odd.
    prompts = torch.randint(0, min(ids.mask, ids.eos), (spec.max_batch, spec.prompt_length), generator=generator)
    return Workload(model, prompts.to(device), None, ids, describe(spec))


def _planner_workload(spec: WorkloadSpec, device: torch.device, dtype: torch.dtype) -> Workload:
    """A trained checkpoint with real prompts (chat template when the tokenizer has one), left-padded."""
    from latent_darm.models.diffusion_lm import DiffusionLM

    planner = DiffusionLM.from_pretrained(spec.planner, dtype=dtype, device=device)
    texts = DEFAULT_PROMPTS
    if spec.prompts_file:
        lines = Path(spec.prompts_file).read_text().splitlines()
        texts = [json.loads(line)["prompt"] for line in lines if line.strip()]
    rows = [texts[i % len(texts)] for i in range(spec.max_batch)]
    chat = planner.tokenizer.chat_template is not None
    ids, mask = planner.left_pad([planner.prompt_ids(text, chat=chat) for text in rows])
    info = {**describe(spec), "chat": chat, "prompt_lengths": mask.sum(dim=1).tolist()}
    return Workload(planner.model, ids, mask if not bool(mask.all()) else None, planner.ids, info)


class PeakMemory:
    """Peak memory of one run above what was in use when it started.

    CUDA: the caching allocator's ``max_memory_allocated`` (tensors only). CPU: the process's resident-set
    high-water mark (VmHWM) after resetting it through ``/proc/self/clear_refs``; freed heap memory is first
    handed back with glibc ``malloc_trim`` so that reused pages of an earlier allocation do not hide growth. This
    counts everything the run touches (tensors, allocator slack, thread stacks); tracemalloc sees none of it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation at start"
        return "VmHWM (reset via /proc/self/clear_refs after malloc_trim) minus VmRSS at start, fresh process"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _proc_status_bytes("VmRSS")
        except OSError:
            self.base = -1

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.base < 0:
            return None
        return _proc_status_bytes("VmHWM") - self.base


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


@dataclass
class Measurement:
    """One timed run of one mode on one batch."""

    seconds: float
    cpu_seconds: float  # this process's CPU time; cpu/wall well below the thread count means contention
    load_average: float  # 1-minute load average of the machine when the run started
    nfe: int  # forward passes of the model (the naive loop: batch-1 passes, one prompt after the other)
    row_nfe: float  # mean passes per row while it still had masks
    peak_bytes: int | None
    tokens: list[list[int]]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_naive(workload: Workload, gen_length: int, block_length: int, batch: int) -> tuple[torch.Tensor, int]:
    """The reference loop, one prompt at a time (each row as it sits in the padded batch, so positions agree)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.reference_llada import reference_generate

    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    hook = workload.model.register_forward_pre_hook(count)
    ids, rows = workload.ids, []
    try:
        # The reference builds its canvas with factory calls that name no device: make them land on the model's.
        with torch.device(workload.prompts.device):
            for row in range(batch):
                mask = None if workload.attention_mask is None else workload.attention_mask[row : row + 1]
                out = reference_generate(
                    workload.model,
                    workload.prompts[row : row + 1],
                    mask,
                    steps=gen_length,
                    gen_length=gen_length,
                    block_length=block_length,
                    mask_id=ids.mask,
                    eos_id=ids.eos,
                    eot_id=ids.eot if ids.eot is not None else ids.eos,
                )
                rows.append(out[:, workload.prompts.shape[1] :])
    finally:
        hook.remove()
    return torch.cat(rows), calls[0]


def measure(workload: Workload, mode: Mode, gen_length: int, block_length: int, batch: int) -> Measurement:
    """Time one run; memory is the run's peak above its start."""
    device = workload.prompts.device
    memory = PeakMemory(device)
    memory.start()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _synchronize(device)
    cpu_start, started = time.process_time(), time.perf_counter()
    dream = workload.info.get("family") == "dream"
    if mode.naive and dream:
        generated, nfe = sampler_dream.run_naive(workload.model, workload.prompts[:batch], gen_length, workload.ids)
        row_nfe = nfe / batch
    elif dream:
        config = sampler_dream.sampler_config(gen_length, mode.threshold, mode.cache)
        out = sampler_dream.sample(workload.model, workload.prompts[:batch], None, config, workload.ids)
        generated, nfe, row_nfe = out.generated, out.nfe, float(out.row_nfe.float().mean())
    elif mode.naive:
        generated, nfe = run_naive(workload, gen_length, block_length, batch)
        row_nfe = nfe / batch
    else:
        config = mode.sampler_config(gen_length, block_length)
        mask = None if workload.attention_mask is None else workload.attention_mask[:batch]
        out = llada_generate(workload.model, workload.prompts[:batch], mask, config, workload.ids)
        generated, nfe, row_nfe = out.generated, out.nfe, float(out.row_nfe.float().mean())
    _synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_start
    peak = memory.stop()
    return Measurement(seconds, cpu_seconds, load, nfe, row_nfe, peak, generated.cpu().tolist())


def warm_up(workload: Workload, block_length: int) -> None:
    """One small forward pass: thread pools, kernels and lazy initialisation are not billed to the first mode."""
    with torch.no_grad():
        workload.model(workload.prompts[:, : block_length * 2])
    _synchronize(workload.prompts.device)


# --- runners: where a mode's measurements happen ------------------------------------------------------------------


class InProcessRunner:
    """Runs a mode in this process on a shared workload (CUDA, where the allocator reports per-run peaks)."""

    def __init__(self, workload: Workload, mode: Mode, gen_length: int, block_length: int, batch: int) -> None:
        self.workload, self.mode, self.args = workload, mode, (gen_length, block_length, batch)

    def run(self) -> Measurement:
        gen_length, block_length, batch = self.args
        return measure(self.workload, self.mode, gen_length, block_length, batch)

    def close(self) -> None:
        pass


def _worker_main(spec: WorkloadSpec, mode: Mode, args: tuple[int, int, int], conn: Connection) -> None:
    """Body of a worker process: build the workload, then answer each ``True`` with one measurement."""
    try:
        if mode.baseline is not None:
            _use_baseline(mode.baseline)
        workload = build_workload(spec)
        warm_up(workload, args[1])
        conn.send({"ready": True})
        while conn.recv():
            conn.send(asdict(measure(workload, mode, *args)))
    except Exception:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _use_baseline(source: str) -> None:
    """Swap this worker's ``latent_darm`` for the one in ``source`` and rebind the names this module uses."""
    for name in [name for name in sys.modules if name == "latent_darm" or name.startswith("latent_darm.")]:
        del sys.modules[name]
    sys.path.insert(0, source)
    import latent_darm.models.llada.configuration as configuration
    import latent_darm.models.llada.modeling as modeling
    import latent_darm.sampling as sampling

    assert Path(sampling.__file__).resolve().is_relative_to(Path(source).resolve()), sampling.__file__
    names = globals()
    names.update(LLaDAConfig=configuration.LLaDAConfig, LLaDAModelLM=modeling.LLaDAModelLM)
    names.update(SpecialIds=sampling.SpecialIds)
    try:
        from latent_darm.models.llada import sampler, sampler_config
    except ImportError:  # a tree from before LLaDA's sampler moved beside its model (issue 19)
        names.update(LLaDASamplerConfig=sampling.SamplerConfig, llada_generate=sampling.diffusion_generate)
    else:
        names.update(LLaDASamplerConfig=sampler_config.LLaDASamplerConfig, llada_generate=sampler.llada_generate)


class WorkerRunner:
    """Runs a mode in its own fresh (spawned) process, so the first run's peak RSS growth is this mode's alone."""

    def __init__(self, spec: WorkloadSpec, mode: Mode, gen_length: int, block_length: int, batch: int) -> None:
        self.mode = mode
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(spec, mode, (gen_length, block_length, batch), child), daemon=True
        )
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        self._receive()

    def run(self) -> Measurement:
        self.conn.send(True)
        return Measurement(**self._receive())

    def _receive(self) -> dict[str, Any]:
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"worker for {self.mode.name!r} died (exit code {self.process.exitcode})") from None
        if "error" in message:
            raise RuntimeError(f"worker for {self.mode.name!r} failed:\n{message['error']}")
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(False)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


# --- results ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """All repeats of one mode at one (gen length, batch)."""

    gen_length: int
    batch: int
    mode: Mode
    runs: list[Measurement] = field(default_factory=list)

    @property
    def best_seconds(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def best_cpu_seconds(self) -> float:
        """The fairer clock on a shared machine: this process's CPU time, which other load barely changes."""
        return min(r.cpu_seconds for r in self.runs)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def tokens_per_second(self) -> float:
        return self.gen_length * self.batch / self.best_seconds

    @property
    def cpu_per_wall(self) -> float:
        best = min(self.runs, key=lambda r: r.seconds)
        return best.cpu_seconds / best.seconds

    @property
    def peak_bytes(self) -> int | None:
        return self.runs[0].peak_bytes  # the first run: the only one in a fresh worker process

    @property
    def tokens(self) -> torch.Tensor:
        return torch.tensor(self.runs[0].tokens)

    @property
    def deterministic(self) -> bool:
        return all(r.tokens == self.runs[0].tokens for r in self.runs)


def agreement(tokens: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of generated positions equal to the reference's."""
    return float((tokens == reference).float().mean())


def run_group(
    make_runner: Callable[[Mode], InProcessRunner | WorkerRunner],
    modes: Sequence[Mode],
    gen_length: int,
    batch: int,
    repeats: int,
    max_repeat_seconds: float,
    log: Console,
) -> list[Row]:
    """All modes of one (gen length, batch); repeat r runs the modes in an order rotated by r."""
    runners = [make_runner(mode) for mode in modes]
    rows = [Row(gen_length, batch, mode) for mode in modes]
    try:
        for runner in runners:
            if isinstance(runner, WorkerRunner):
                runner.wait_ready()
        for repeat in range(repeats):
            for index in _rotated(range(len(modes)), repeat):
                row = rows[index]
                if row.runs and row.runs[0].seconds > max_repeat_seconds:
                    continue  # one long run already averages over the machine's load swings
                measurement = runners[index].run()
                row.runs.append(measurement)
                log.print(
                    f"gen {gen_length} batch {batch} repeat {repeat + 1}/{repeats} {row.mode.name}: "
                    f"{measurement.seconds:.2f} s, nfe {measurement.nfe}, load {measurement.load_average:.2f}"
                )
    finally:
        for runner in runners:
            runner.close()
    return rows


def _rotated(items: range, shift: int) -> Iterator[int]:
    order = list(items)
    shift %= len(order)
    yield from order[shift:] + order[:shift]


def _megabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def build_table(rows: Sequence[Row], threshold: float) -> tuple[Table, list[dict[str, Any]], list[str]]:
    """The printed table, its numbers as records, and the goal checks of the issue."""
    table = Table(title="Diffusion sampler: side by side (seconds = best of the runs)")
    for column in (
        "gen",
        "batch",
        "mode",
        "NFE",
        "runs",
        "seconds",
        "tok/s",
        "× naive",
        "peak MB",
        "agree",
        "cpu/wall",
    ):
        table.add_column(column, justify="left" if column == "mode" else "right")
    records: list[dict[str, Any]] = []
    checks: list[str] = []
    groups: dict[tuple[int, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.gen_length, row.batch), []).append(row)
    for (gen_length, batch), group in groups.items():
        by_name = {row.mode.name: row for row in group}
        naive = next((row for row in group if row.mode.naive), None)
        exact = by_name.get("exact", group[0])
        for row in group:
            speedup = math.nan if naive is None else naive.best_seconds / row.best_seconds
            agree = agreement(row.tokens, exact.tokens)
            table.add_row(
                str(gen_length),
                str(batch),
                row.mode.name,
                str(row.runs[0].nfe),
                str(len(row.runs)),
                f"{row.best_seconds:.2f}",
                f"{row.tokens_per_second:.1f}",
                f"{speedup:.2f}",
                _megabytes(row.peak_bytes),
                f"{agree:.3f}",
                f"{row.cpu_per_wall:.2f}",
                end_section=row is group[-1],
            )
            records.append(
                {
                    "gen_length": gen_length,
                    "batch": batch,
                    "mode": row.mode.name,
                    "threshold": row.mode.threshold,
                    "cache": "naive" if row.mode.naive else row.mode.cache,
                    "nfe": row.runs[0].nfe,
                    "row_nfe_mean": row.runs[0].row_nfe,
                    "seconds": [r.seconds for r in row.runs],
                    "cpu_seconds": [r.cpu_seconds for r in row.runs],
                    "load_average": [r.load_average for r in row.runs],
                    "best_seconds": row.best_seconds,
                    "median_seconds": row.median_seconds,
                    "tokens_per_second": row.tokens_per_second,
                    "speedup_vs_naive": speedup,
                    "peak_bytes": row.peak_bytes,
                    "agreement_with_exact": agree,
                    "deterministic_across_repeats": row.deterministic,
                }
            )
        for row in group:
            before = by_name.get(f"{row.mode.name} (before)")
            if before is not None:
                same = "same tokens" if torch.equal(before.tokens, row.tokens) else "DIFFERENT tokens"
                checks.append(
                    f"gen {gen_length} batch {batch}: {row.mode.name} now vs before: "
                    f"{before.best_seconds / row.best_seconds:.2f}× as fast "
                    f"(CPU time {before.best_cpu_seconds / row.best_cpu_seconds:.2f}×), {same}, "
                    f"row NFE {row.runs[0].row_nfe:.1f} vs {before.runs[0].row_nfe:.1f}"
                )
        if naive is None or "exact" not in by_name:
            continue
        equal = torch.equal(exact.tokens, naive.tokens)
        mismatches = int((exact.tokens != naive.tokens).sum())
        checks.append(
            f"gen {gen_length} batch {batch}: exact tokens == naive loop tokens: "
            + ("yes" if equal else f"NO ({mismatches} of {exact.tokens.numel()} positions differ)")
        )
        exact_speedup = naive.best_seconds / exact.best_seconds
        if batch == 1:
            verdict = "met" if exact_speedup >= 1 else "NOT met"
            checks.append(f"gen {gen_length} batch 1: exact vs naive loop {exact_speedup:.2f}× (goal ≥ 1: {verdict})")
        else:
            verdict = "met" if exact_speedup > 1 else "NOT met"
            checks.append(
                f"gen {gen_length} batch {batch}: exact per prompt vs naive loop {exact_speedup:.2f}× "
                f"(goal > 1: {verdict})"
            )
        fastest = by_name.get(f"dual + τ {threshold:g}")
        if fastest is not None:
            again = exact.best_seconds / fastest.best_seconds
            verdict = "met" if again >= 3 else "NOT met"
            agree = agreement(fastest.tokens, exact.tokens)
            checks.append(
                f"gen {gen_length} batch {batch}: dual + τ vs exact {again:.2f}× "
                f"(goal 'several times', read as ≥ 3: {verdict}; agreement {agree:.3f})"
            )
        for row in group:
            if not row.deterministic:
                checks.append(f"gen {gen_length} batch {batch}: {row.mode.name} gave different tokens across repeats")
    return table, records, checks


# --- command line -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen-lengths", type=int, nargs="+", default=None, help="default 64 256 (--quick: 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-length", type=int, default=128, help="random prompts; --planner uses real ones")
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3, --quick 1)")
    parser.add_argument(
        "--max-repeat-seconds",
        type=float,
        default=math.inf,
        help="do not repeat a configuration whose first run took longer than this",
    )
    parser.add_argument("--quick", action="store_true", help="tiny model and gen 32: a smoke run")
    parser.add_argument("--family", choices=["llada", "dream"], default="llada", help="random model's family")
    parser.add_argument(
        "--shape",
        choices=sorted({*SHAPES, *sampler_dream.SHAPES}),
        default=None,
        help="random-model shape (default small; 8b is LLaDA's, 7b Dream's)",
    )
    parser.add_argument("--modes", nargs="+", choices=MODE_KEYS, default=list(MODE_KEYS), help="modes to run")
    parser.add_argument("--baseline-src", default=None, help="also run each mode with the latent_darm found here")
    parser.add_argument("--planner", default=None, help="a LLaDA-layout checkpoint directory instead of random weights")
    parser.add_argument("--prompts-file", default=None, help="JSONL with a 'prompt' per line (with --planner)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--init-std", type=float, default=None, help="random weights' std (default 0.2·√(512/d))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.baseline_src is not None and args.device != "cpu":
        parser.error("--baseline-src needs worker processes, i.e. --device cpu")
    if args.gen_lengths is None:
        args.gen_lengths = [32] if args.quick else [64, 256]
    if args.shape is None:
        args.shape = "tiny" if args.quick else "small"
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    shapes = sampler_dream.SHAPES if args.family == "dream" else SHAPES
    if args.shape not in shapes:
        parser.error(f"--shape {args.shape} is not a {args.family} shape; choose from {', '.join(sorted(shapes))}")
    return args


def machine_info(device: torch.device, threads: int | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # A killed run must take its worker processes with it (daemonic children are only reaped on a normal exit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console, log = Console(), Console(stderr=True)
    if not console.is_terminal:
        console = Console(width=160)  # a file gets the whole table, not an 80-column wrap
    if not log.is_terminal:
        log = Console(stderr=True, width=160)
    device = torch.device(args.device)
    spec = WorkloadSpec(
        shape=args.shape,
        planner=args.planner,
        device=args.device,
        dtype=args.dtype,
        prompt_length=args.prompt_length,
        max_batch=max(args.batch_sizes),
        seed=args.seed,
        init_std=args.init_std,
        prompts_file=args.prompts_file,
        threads=args.threads,
        family=args.family,
    )
    modes = benchmark_modes(args.threshold, args.modes, args.baseline_src, args.family)
    shared: Workload | None = None
    if device.type == "cuda":
        shared = build_workload(spec)
        warm_up(shared, args.block_length)
        info = shared.info
    else:
        # Workers rebuild the model themselves; the parent only needs its description (built on the meta device).
        info = describe(spec)
    log.print(f"model: {info['source']}, {info['parameters'] / 1e6:.1f}M parameters, {args.dtype} on {device}")

    rows: list[Row] = []
    started = time.perf_counter()
    groups = [(g, b) for g in args.gen_lengths for b in args.batch_sizes]
    for index, (gen_length, batch) in enumerate(groups):

        def make_runner(mode: Mode, gen_length: int = gen_length, batch: int = batch) -> Any:
            if shared is not None:
                return InProcessRunner(shared, mode, gen_length, args.block_length, batch)
            return WorkerRunner(spec, mode, gen_length, args.block_length, batch)

        rows += run_group(make_runner, modes, gen_length, batch, args.repeats, args.max_repeat_seconds, log)
        # Report after every group: a long CPU run that is stopped early still leaves its finished groups.
        final = index == len(groups) - 1
        report(args, argv, info, device, rows, time.perf_counter() - started, console if final else log, final)


def report(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    info: dict[str, Any],
    device: torch.device,
    rows: list[Row],
    total: float,
    console: Console,
    final: bool,
) -> None:
    """Print the table of the groups finished so far and (with --json) rewrite the JSON file with them."""
    table, records, checks = build_table(rows, args.threshold)
    if not final:
        table.title = f"{table.title} — partial"
    console.print(table)
    prompt_width = args.prompt_length if args.planner is None else "real prompts, left-padded"
    console.print(
        f"model {info['source']} ({info['parameters'] / 1e6:.1f}M params, {args.dtype}, {device}); prompt "
        f"{prompt_width}; block {args.block_length}; steps = gen length; τ {args.threshold:g}; "
        f"{args.repeats} repeats; total {total / 60:.1f} min"
    )
    for check in checks:
        console.print("• " + check)
    if args.json is not None:
        payload = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine_info(device, args.threads),
            "model": info,
            "memory_method": PeakMemory(device).method,
            "results": records,
            "checks": checks,
            "total_seconds": total,
            "complete": final,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json.with_name(args.json.name + ".partial")
        partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        partial.replace(args.json)


if __name__ == "__main__":
    main()
