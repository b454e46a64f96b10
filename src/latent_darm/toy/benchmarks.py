"""The toy world's splits as benchmarks, so ``darm eval`` / ``darm report`` grade them like any other.

``toy`` is the whole test split (every level; each example carries ``meta.level``, so reports break it down),
``toy1`` … ``toyN`` the test split by level (level k = k arrows to follow); ``toy_train`` is the whole train
split (for checking what the models fit, never for reporting). Registration is per built world: the loaders read
that world's data files, so two worlds (another seed, ``--quick``) re-register the names over each other.
"""

from __future__ import annotations

from collections.abc import Callable

from latent_darm.evaluation.benchmarks import BenchmarkSpec, Example, register_benchmark
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.world import Split, ToyProblem

TEST_BENCHMARK = "toy"
TRAIN_BENCHMARK = "toy_train"


def benchmark_name(level: int) -> str:
    return f"toy{level}"


def to_example(problem: ToyProblem) -> Example:
    return Example(problem.id, problem.question, str(problem.answer), "integer", meta={"level": problem.level})


def _loader(artifacts: WorldArtifacts, split: Split, level: int | None) -> Callable[[], list[Example]]:
    def load() -> list[Example]:
        return [to_example(p) for p in artifacts.problems(split) if level is None or p.level == level]

    return load


def register_toy_benchmarks(artifacts: WorldArtifacts, *, replace: bool = True) -> list[str]:
    """Register ``toy`` and ``toy<k>`` for every level of ``artifacts``' world (its test split) and ``toy_train``;
    returns the names. ``replace=False`` refuses to overwrite names already registered."""
    names = []
    for level in artifacts.config.levels:
        name = benchmark_name(level)
        description = f"toy world {artifacts.config.fingerprint()}: test split, level {level} ({level} arrows)"
        spec = BenchmarkSpec(name, "integer", loader=_loader(artifacts, "test", level), description=description)
        register_benchmark(spec, replace=replace)
        names.append(name)
    description = f"toy world {artifacts.config.fingerprint()}: test split, all levels"
    register_benchmark(
        BenchmarkSpec(TEST_BENCHMARK, "integer", loader=_loader(artifacts, "test", None), description=description),
        replace=replace,
    )
    description = f"toy world {artifacts.config.fingerprint()}: train split, all levels"
    spec = BenchmarkSpec(TRAIN_BENCHMARK, "integer", loader=_loader(artifacts, "train", None), description=description)
    register_benchmark(spec, replace=replace)
    return [TEST_BENCHMARK, *names, TRAIN_BENCHMARK]
