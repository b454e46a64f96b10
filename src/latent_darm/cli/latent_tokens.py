"""``darm latent-tokens``: train the five attention-pattern variants (and the AR-NTP control) on generated
puzzles with one budget, sweep the number of latent tokens, write results JSONL, a Markdown table and figures."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from latent_darm.cli.choices import DEVICE_HELP, Dtype, complete_device
from latent_darm.cli.common import (
    cache_dir_path,
    check_output_dir,
    console,
    output_path,
    parse_dtype,
    resolve_device,
    resolve_dtype,
    seed_callback,
)
from latent_darm.cli.options import with_option_groups
from latent_darm.errors import ConfigError

if TYPE_CHECKING:
    from latent_darm.latent_tokens.sweep import RunSettings


class Task(StrEnum):
    sudoku = "sudoku"
    countdown = "countdown"


class Preset(StrEnum):
    cpu = "cpu"
    paper = "paper"


class MtpModels(StrEnum):
    per_window = "per-window"
    shared = "shared"


class Selection(StrEnum):
    random = "random"
    confidence = "confidence"


def parse_knobs(text: str | None, name: str) -> tuple[int | None, ...] | None:
    """``"0,1,2,all"`` → (0, 1, 2, None); a one-line error naming a part that is no integer (the settings check
    the range)."""
    if text is None:
        return None
    values: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            values.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an integer or 'all'") from None
        values.append(value)
    return tuple(values)


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``"0,1,2"`` → (0, 1, 2), blank → () (the settings refuse it, and repeated or out-of-range seeds); a
    one-line error naming a part that is no integer."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        return ()
    values = []
    for part in parts:
        try:
            values.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds: {part!r} is not an integer") from None
    return tuple(values)


def parse_variants(text: str) -> tuple[str, ...]:
    """``"mdm, scdm"`` → ("mdm", "scdm"); blank parts are dropped (the settings refuse an empty list and unknown
    names)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_ema(text: str) -> float | None:
    """``off`` → None, else the number (the settings check its range)."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--ema: {text!r} is not a number or 'off'") from None


@dataclass(frozen=True)
class LatentTokensOptions:
    """The options of ``darm latent-tokens`` (an option group: see :mod:`latent_darm.cli.options`)."""

    task: Task = typer.Option(Task.sudoku, case_sensitive=False, help="Puzzle task.")
    size: int | None = typer.Option(None, help="Sudoku side (4, 6, 9) or the count of Countdown numbers.")
    difficulty: int | None = typer.Option(
        None, help="Sudoku: number of givens (fewer = harder); Countdown: largest number."
    )
    seed: int = typer.Option(0, callback=seed_callback, help="Seed of the puzzles, the models and decoding.")
    out: Path | None = typer.Option(
        None,
        parser=output_path,
        metavar="<path>",
        help="Output directory (default ./darm-latent-tokens-<task>-seed<SEED>).",
    )
    device: str = typer.Option("auto", help=DEVICE_HELP, autocompletion=complete_device)
    dtype: Dtype = typer.Option(
        Dtype.auto,
        case_sensitive=False,
        help="Evaluation dtype (training autocasts to it on a GPU); auto: float32 on CPU, bfloat16 on a GPU.",
    )
    preset: Preset = typer.Option(
        Preset.cpu, case_sensitive=False, help="cpu (a laptop) or paper (6 layers × 512, batch 512, EMA 0.9999)."
    )
    quick: bool = typer.Option(False, "--quick", help="A tiny run in seconds (its models learn little; for tests).")
    variants: str | None = typer.Option(
        None,
        help="Comma-separated variants (default: the paper's five, mdm,sidm,scdm,ar,ar-mtp; the ar-ntp control is"
        " opt-in); the registry is latent_tokens/variants.py.",
    )
    latent: str | None = typer.Option(
        None, "--latent-tokens", help="SCDM's n values, e.g. 0,1,2,4,all (default 0, 1, 2, 4, … and all)."
    )
    windows: str | None = typer.Option(None, help="AR+MTP's w values, e.g. 1,2,4,all (default 1, 2, 4, … and all).")
    mtp_models: MtpModels = typer.Option(
        MtpModels.per_window,
        case_sensitive=False,
        help="AR+MTP: one model trained per swept w (the authors), or one shared model trained on random w.",
    )
    k: int = typer.Option(1, "--k", help="Answer tokens committed per diffusion step.")
    selection: Selection = typer.Option(
        Selection.random,
        case_sensitive=False,
        help="random (a uniform order, the authors' SCDM sweep) or confidence (the most probable of --candidates);"
        " under random, MDM and SIDM are also reported under top probability over all masked positions.",
    )
    candidates: str = typer.Option(
        "all", help="Confidence decoding: top probability over N random masked positions, or 'all' (the authors)."
    )
    chain_candidates: bool = typer.Option(
        True,
        "--chain-candidates/--no-chain-candidates",
        help="SCDM with several candidates per step: each reads the candidates before it too (the authors).",
    )
    temperature: float = typer.Option(1.0, help="Gumbel sampling temperature (the authors: 1); 0 = argmax.")
    ema: str | None = typer.Option(
        None, help="EMA decay of the weights used for evaluation, or 'off' (default: the preset's, cpu 0.999)."
    )
    seeds: str | None = typer.Option(
        None, help="Train and evaluate under each of these seeds, e.g. 0,1,2 (the table shows mean ± sd)."
    )
    steps: int | None = typer.Option(None, help="Training steps per variant (overrides the preset).")
    noise_puzzle: bool = typer.Option(
        False,
        "--noise-puzzle",
        help="Diffusion training noises and predicts the puzzle cells too (the authors' SCDM sweep checkpoints).",
    )
    test_file: Path | None = typer.Option(
        None, help="Evaluate on these puzzles (JSONL with 'puzzle', optional 'solution') instead of the test split."
    )
    cache_dir: Path | None = typer.Option(
        None,
        parser=cache_dir_path,
        metavar="<path>",
        help="Trained-model cache (default $LATENT_DARM_CACHE/latent-tokens or ~/.cache/latent-darm/…).",
    )
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr.")

    def run_settings(self) -> RunSettings:
        """The run's settings; the settings dataclasses check every value, once, with a one-line error naming its
        option."""
        from latent_darm.latent_tokens.decoding import DecodeSettings
        from latent_darm.latent_tokens.settings import run_settings
        from latent_darm.latent_tokens.sweep import RunSettings

        picked = parse_knobs(self.candidates, "--candidates")
        if picked is None or len(picked) != 1:
            raise ConfigError(f"--candidates: {self.candidates!r} must be one integer ≥ 1 or 'all'")
        base = run_settings(
            task=str(self.task), size=self.size, difficulty=self.difficulty, seed=self.seed, quick=self.quick,
            preset=str(self.preset),
        )  # fmt: skip
        return RunSettings(
            world=base.world,
            train=replace(
                base.train,
                steps=base.train.steps if self.steps is None else self.steps,
                ema=base.train.ema if self.ema is None else parse_ema(self.ema),
                noise_puzzle=self.noise_puzzle,
            ),
            variants=base.variants if self.variants is None else parse_variants(self.variants),
            latent_values=parse_knobs(self.latent, "--latent-tokens"),
            windows=parse_knobs(self.windows, "--windows"),
            decode=DecodeSettings(
                k=self.k,
                selection=str(self.selection),
                candidates=picked[0],
                temperature=self.temperature,
                chain_candidates=self.chain_candidates,
            ),
            eval_batch=base.eval_batch,
            seeds=parse_seeds(self.seeds),
            mtp_models=str(self.mtp_models),
        )

    def out_dir(self) -> Path:
        default = f"darm-latent-tokens-{self.task}-seed{self.seed}{'-quick' if self.quick else ''}"
        return self.out if self.out is not None else Path(default)


def title_of(settings: RunSettings, test: list[Any] | None, test_file: Path | None) -> str:
    w = settings.world
    what = f"{w.size}×{w.size} Sudoku, {w.difficulty} givens" if w.task == "sudoku" else (
        f"Countdown, {w.size} numbers ≤ {w.difficulty}")  # fmt: skip
    if test is not None and test_file is not None:
        return f"Latent tokens: {what}, {len(test)} puzzles from {test_file.name}"
    return f"Latent tokens: {what}, {w.test_size} test puzzles"


def write_outputs(
    outcome: Any, settings: RunSettings, out_dir: Path, title: str, run_info: dict[str, Any], log: Any
) -> None:
    """The report, the curves and ``run.json`` under ``out_dir``; the tables on stdout, the paths on stderr."""
    from latent_darm.io import atomic_write_json
    from latent_darm.latent_tokens.curves import curves_table, write_curves
    from latent_darm.latent_tokens.report import markdown_table, write_report
    from latent_darm.latent_tokens.sweep import RESULTS_FILE

    paths = write_report(outcome.records, out_dir, title) + write_curves(outcome.curves, out_dir, title)
    atomic_write_json(
        out_dir / "run.json",
        {"settings": settings.to_dict(), "seconds": outcome.seconds, **run_info,
         "world_cache": str(outcome.world_dir), "reused_models": outcome.reused_models},
    )  # fmt: skip
    typer.echo(markdown_table(outcome.records))
    if outcome.curves:
        typer.echo(curves_table(outcome.curves))
    phases = ", ".join(f"{phase} {sec:.0f} s" for phase, sec in outcome.seconds.items())
    log(f"seconds: {phases}")
    log(f"wrote {out_dir / RESULTS_FILE}, " + ", ".join(str(p) for p in paths) + f", {out_dir / 'run.json'}")


@with_option_groups
def latent_tokens_command(options: LatentTokensOptions) -> None:
    """The paper "Reasoning with Latent Tokens in Diffusion Language Models" on a laptop: MDM, SIDM, SCDM, AR,
    AR+MTP (and the AR-NTP control) — one LLaDA network, five attention patterns — trained on the same puzzles
    with the same budget; accuracy against the number of latent tokens per decoding step."""
    from latent_darm.latent_tokens.sweep import default_cache_dir, run
    from latent_darm.latent_tokens.tasks import load_puzzle_file

    settings = options.run_settings()
    device = resolve_device(options.device)
    torch_dtype = parse_dtype(resolve_dtype(options.dtype, device))
    out_dir = options.out_dir()
    check_output_dir(out_dir)  # a file, a read-only or unwritable place: one line before any puzzle or model
    check_output_dir(options.cache_dir if options.cache_dir is not None else default_cache_dir(), "--cache-dir")
    test = load_puzzle_file(options.test_file, settings.world) if options.test_file is not None else None

    def log(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    outcome = run(
        settings, out_dir, cache_dir=options.cache_dir, test_puzzles=test, device=device, dtype=torch_dtype,
        progress=options.progress, log=log,
    )  # fmt: skip
    run_info = {"device": device, "dtype": options.dtype, "dtype_resolved": str(torch_dtype).removeprefix("torch.")}
    write_outputs(outcome, settings, out_dir, title_of(settings, test, options.test_file), run_info, log)
