"""``darm demo``: train (or reuse) the toy world's planner, executor and projector, evaluate every pipeline of the
method on its test split, and write the report. Tables go to stdout, progress to stderr."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from latent_darm.cli.common import cache_dir_path, check_output_dir, console, output_path, seed_callback
from latent_darm.cli.latent_tokens import parse_seeds
from latent_darm.errors import ConfigError
from latent_darm.evaluation.report import MARKDOWN_HEADERS, Run, level_rows, make_row
from latent_darm.extras import require
from latent_darm.seeds import check_seed_list

if TYPE_CHECKING:
    from latent_darm.toy.demo import DemoOutcome


def default_out(seed: int, quick: bool) -> Path:
    return Path(f"darm-demo-seed{seed}{'-quick' if quick else ''}")


def default_seeds_out(seeds: tuple[int, ...], quick: bool) -> Path:
    return Path(f"darm-demo-seeds{'-'.join(map(str, seeds))}{'-quick' if quick else ''}")


def choose_out_dir(out: Path | None, default: Path, fingerprint: str, log: Callable[[str], None]) -> Path:
    """Before any training: a directory holding another world's demo results is refused when named with ``--out``;
    the default one is left as it is and this world's results go beside it, ``<default>-<fingerprint>``."""
    from latent_darm.toy.demo import recorded_fingerprint  # heavy; only when the command runs

    target = default if out is None else out
    previous = recorded_fingerprint(target)
    if previous is None or previous == fingerprint:
        return target
    if out is not None:
        raise ConfigError(
            f"--out {out} holds the demo results of another world (fingerprint {previous}; this one is {fingerprint}):"
            " remove it or choose another --out"
        )
    moved = Path(f"{default}-{fingerprint}")
    log(f"{default} holds the results of another world (fingerprint {previous}); writing this one's to {moved}")
    return moved


def summary_table(runs: list[Run], fingerprint: str | None = None) -> Table:
    """One row per configuration: accuracy per level, then the report's overall cells (accuracy, 95% interval,
    mean cost per question). The title names the demo's fingerprint (the README's table states it too)."""
    levels = sorted({row.level for run in runs for row in level_rows(run)}, key=str)
    world = "Toy world" if fingerprint is None else f"Toy world (demo fingerprint {fingerprint})"
    table = Table(title=f"{world}, test split: accuracy % by level, mean cost per question")
    table.add_column("configuration", no_wrap=True)  # a label is what readers (and tests) search for
    for header in [*(f"L{level}" for level in levels), *MARKDOWN_HEADERS[2:]]:
        table.add_column(header, justify="right")
    for run in runs:
        by_level = {row.level: row.summary.accuracy for row in level_rows(run)}
        overall = make_row(run.label, run.records).markdown_cells()
        levels_cells = [f"{100 * by_level[level]:.0f}" if level in by_level else "–" for level in levels]
        table.add_row(run.label, *levels_cells, *overall[2:])
    return table


def level_table(runs: list[Run]) -> Table:
    """One row per configuration and level, with the report's cells for that level."""
    table = Table(title="By configuration and level")
    for header in [MARKDOWN_HEADERS[0], "level", *MARKDOWN_HEADERS[1:]]:
        table.add_column(header, justify="left" if header == MARKDOWN_HEADERS[0] else "right")
    for run in runs:
        for row in level_rows(run):
            cells = row.markdown_cells()
            table.add_row(cells[0], str(row.level), *cells[1:])
    return table


def print_outcome(outcome: DemoOutcome, by_level: bool) -> None:
    stdout = Console(width=200)
    stdout.print(summary_table(outcome.runs, outcome.fingerprint))
    stdout.print(f"demo fingerprint: {outcome.fingerprint}", highlight=False)
    if by_level:
        stdout.print(level_table(outcome.runs))
    if outcome.curves:
        flat = [c.name for c in outcome.curves if c.on_plateau]
        rising = ", ".join(f"{c.name} ({100 * c.tail_drop:.1f}%)" for c in outcome.curves if not c.on_plateau)
        console.print(
            f"projectors on a plateau (held-out loss fell < 2% over the last quarter of training): "
            f"{len(flat)}/{len(outcome.curves)}" + (f"; still falling: {rising}" if rising else ""),
            highlight=False,
            soft_wrap=True,
        )
    phases = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in outcome.seconds.items())
    console.print(f"seconds: {phases} (world {'reused' if outcome.world.reused else 'built'})", highlight=False)
    console.print(f"results in {outcome.out_dir}/", highlight=False, soft_wrap=True)
    console.print(
        "  report.md, toy.csv, toy_levels.csv, toy_paired.csv, toy_accuracy_vs_tokens.png, "
        "toy_accuracy_vs_forward_passes.png, projector_curves.png, demo.json, runs/<configuration>/",
        highlight=False,
        soft_wrap=True,
    )


def demo_command(
    seed: int = typer.Option(0, callback=seed_callback, help="Seed of the world's data and of every model's training."),
    out: Path | None = typer.Option(
        None, parser=output_path, metavar="<path>", help="Output directory (default ./darm-demo-seed<SEED>[-quick])."
    ),
    quick: bool = typer.Option(False, "--quick", help="A small world in seconds (its models learn little)."),
    cache_dir: Path | None = typer.Option(
        None,
        parser=cache_dir_path,
        metavar="<path>",
        help="Where trained worlds are cached (default $LATENT_DARM_CACHE/toy or ~/.cache/latent-darm/toy).",
    ),
    levels: bool = typer.Option(False, "--levels", help="Also print every configuration's cost per level."),
    seeds: str | None = typer.Option(
        None,
        metavar="<list>",
        help="Run the demo for each of these world seeds, e.g. 0,1,2 (instead of --seed): each seed's results in "
        "OUT/seed<N>/, and every row's mean ± sd with the per-seed paired tests in OUT/seeds.md (default OUT "
        "./darm-demo-seeds<0-1-2>[-quick]).",
    ),
    workers: int | None = typer.Option(
        None,
        metavar="<int>",
        help="Train this many projectors, and evaluate this many configurations, at once in worker processes "
        "(default: one per CPU this process may use); the weights and answers do not depend on it.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """The whole method on a laptop CPU: train or reuse the toy planner, executors and projectors; evaluate the
    executor alone (direct, CoT), the planner alone, the four text pairings, and text against latent DDLM→ARM
    (projector alone, + LoRA, plan-prefix executor) over a sweep of planner steps and denoised fractions; write
    JSONL results, a Markdown report and the accuracy-against-tokens and -forward-passes plots."""
    require("matplotlib", "darm demo (its figures)")  # before minutes of training, not after
    from latent_darm.toy.build import default_cache_dir
    from latent_darm.toy.demo import demo_settings, run_demo  # heavy; loaded only when the command runs
    from latent_darm.toy.processes import check_workers, default_workers

    def log(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    run_seeds = parse_seeds(seeds)  # before any training: a bad list is one line
    check_seed_list(run_seeds)
    workers = check_workers(default_workers() if workers is None else workers)
    if run_seeds is not None and seed != 0:
        raise ConfigError(f"--seed {seed} and --seeds {seeds}: give one of them")
    if run_seeds is not None:
        check_output_dir(cache_dir if cache_dir is not None else default_cache_dir(), "--cache-dir")
        base = out if out is not None else default_seeds_out(run_seeds, quick)
        check_output_dir(base)
        run_many(run_seeds, base, quick=quick, cache_dir=cache_dir, progress=progress, levels=levels, log=log,
                 workers=workers)  # fmt: skip
        return
    settings = demo_settings(quick=quick, seed=seed)
    out_dir = choose_out_dir(out, default_out(seed, quick), settings.fingerprint(), log)
    check_output_dir(out_dir)
    check_output_dir(cache_dir if cache_dir is not None else default_cache_dir(), "--cache-dir")
    outcome = run_demo(settings, out_dir, cache_dir=cache_dir, progress=progress, log=log, workers=workers)
    print_outcome(outcome, levels)


def run_many(
    seeds: tuple[int, ...],
    base: Path,
    *,
    quick: bool,
    cache_dir: Path | None,
    progress: bool,
    levels: bool,
    log: Callable[[str], None],
    workers: int = 1,
) -> None:
    """``--seeds``: every seed's output directory is checked before any training, then each seed's demo runs in
    turn (its table printed as it finishes) and the mean ± sd table and per-seed paired tests close the run."""
    import time

    from latent_darm.toy.demo import demo_settings, run_demo
    from latent_darm.toy.seeds import seed_dir, write_seed_report

    plan = []
    for seed in seeds:
        settings = demo_settings(quick=quick, seed=seed)
        directory = seed_dir(base, seed)
        plan.append((settings, choose_out_dir(directory, directory, settings.fingerprint(), log)))
    outcomes, started = [], time.perf_counter()
    for seed, (settings, directory) in zip(seeds, plan, strict=True):
        log(f"seed {seed}: {directory}")
        outcome = run_demo(settings, directory, cache_dir=cache_dir, progress=progress, log=log, workers=workers)
        print_outcome(outcome, levels)
        outcomes.append(outcome)
    paths = write_seed_report(outcomes, seeds, base)
    print_seeds(outcomes, seeds)
    console.print(f"seeds: {time.perf_counter() - started:.0f} s in all", highlight=False)
    console.print(f"mean ± sd and paired tests over the seeds: {', '.join(map(str, paths))}", highlight=False)


def print_seeds(outcomes: list[DemoOutcome], seeds: tuple[int, ...]) -> None:
    """The accuracy table over the seeds (mean ± sd) and the per-seed paired tests, on stdout."""
    from latent_darm.toy.seeds import accuracy_cells, pair_cells, seed_pairs, seed_rows

    stdout = Console(width=240)
    names = [f"seed {s}" for s in seeds]
    table = Table(title=f"Toy world over seeds {', '.join(map(str, seeds))}: accuracy % (mean ± sample sd)")
    for header in ["configuration", *names, "mean ± sd"]:
        table.add_column(header, justify="left" if header == "configuration" else "right", no_wrap=True)
    for row in seed_rows(outcomes):
        table.add_row(*accuracy_cells(row))
    stdout.print(table)
    paired = Table(title="Paired tests per seed: only A right / only B right, exact McNemar p")
    for header in ["A", "B", *names, "pooled", "p < 0.05 for"]:
        paired.add_column(header, no_wrap=header in ("A", "B"))
    for pair in seed_pairs(outcomes):
        paired.add_row(*pair_cells(pair))
    stdout.print(paired)
