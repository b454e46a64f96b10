"""The demo's trained models after the world (projector recipes, the text-LoRA executor) as independent jobs, run one
after another or in worker processes.

Each job trains on one torch thread from its own seed and writes its own run directory (the latent cache they share
is locked per setting), so a job's weights do not depend on which process ran it or on what ran beside it: with
``workers=2`` a 2-core machine trains two projectors at once and the demo's table is the same as with one worker
(tested on the quick world).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latent_darm.threads import single_thread
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.processes import check_workers, map_in_processes
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


def _run_in_worker(job: TrainingJob) -> Path:
    with single_thread():
        return job.run(progress=False)


def run_jobs(jobs: Sequence[TrainingJob], *, workers: int = 1, progress: bool = True) -> dict[str, Path]:
    """Every job's output directory by name (in ``jobs``' order). One worker runs them here, in turn, with their own
    progress bars; more run them in that many spawned processes (:func:`map_in_processes`: one bar over the jobs, a
    failed job's error raised after the others finish, so their models are kept for the rerun)."""
    check_workers(workers)
    if workers == 1 or len(jobs) <= 1:
        return {job.name: job.run(progress) for job in jobs}
    paths = map_in_processes(
        _run_in_worker, jobs, workers=workers, description="projectors and LoRA executors", progress=progress
    )
    return {job.name: path for job, path in zip(jobs, paths, strict=True)}
