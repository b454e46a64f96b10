"""The demo's trained models after the world (projector recipes, the text-LoRA executor) as independent jobs, run one
after another or in worker processes.

Each job trains on one torch thread from its own seed and writes its own run directory (the latent cache they share
is locked per setting), so a job's weights do not depend on which process ran it or on what ran beside it: with
``workers=2`` a 2-core machine trains two projectors at once and the demo's table is the same as with one worker
(tested on the quick world).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from latent_darm.errors import ConfigError
from latent_darm.progress import progress_bar
from latent_darm.threads import single_thread
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.projectors import PlanSetting, ProjectorRecipe, train_recipe
from latent_darm.toy.text_lora import train_text_lora
from latent_darm.training.projector_trainer import ProjectorTrainingConfig


@dataclass(frozen=True)
class TrainingJob:
    """One model to train: ``recipe``'s projector, or (``recipe`` None) the text-LoRA executor on ``settings``.
    Picklable, so a worker process can run it."""

    name: str
    artifacts: WorldArtifacts
    config: ProjectorTrainingConfig
    questions: int
    batch_size: int
    key: str
    recipe: ProjectorRecipe | None = None
    hidden_dim: int = 0
    settings: tuple[PlanSetting, ...] = ()

    def run(self, progress: bool) -> Path:
        if self.recipe is None:
            return train_text_lora(
                self.artifacts,
                self.settings,
                self.config,
                questions=self.questions,
                batch_size=self.batch_size,
                key=self.key,
                progress=progress,
            )
        return train_recipe(
            self.artifacts,
            self.recipe,
            self.config,
            questions=self.questions,
            hidden_dim=self.hidden_dim,
            batch_size=self.batch_size,
            run_key=self.key,
            progress=progress,
        )


def default_workers() -> int:
    """The CPUs this process may run on (all of a laptop's cores; 2 on this project's CI machines)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    return workers


def _run_in_worker(job: TrainingJob) -> Path:
    with single_thread():
        return job.run(progress=False)


def run_jobs(jobs: Sequence[TrainingJob], *, workers: int = 1, progress: bool = True) -> dict[str, Path]:
    """Every job's output directory by name (in ``jobs``' order). One worker runs them here, in turn, with their own
    progress bars; more run them in that many spawned processes (one bar over the jobs). A failed job's error is
    raised here after the others finish, so their models are kept for the rerun."""
    check_workers(workers)
    if workers == 1 or len(jobs) <= 1:
        return {job.name: job.run(progress) for job in jobs}
    done: dict[str, Path] = {}
    errors: list[BaseException] = []
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool, progress_bar(progress) as bar:
        task = bar.add_task(f"projectors and LoRA executors ({min(workers, len(jobs))} processes)", total=len(jobs))
        futures = {pool.submit(_run_in_worker, job): job.name for job in jobs}
        for future in as_completed(futures):
            try:
                done[futures[future]] = future.result()
            except Exception as exc:  # re-raised below, after the other jobs are kept
                errors.append(exc)
            bar.advance(task)
    if errors:
        raise errors[0]
    return {job.name: done[job.name] for job in jobs}
