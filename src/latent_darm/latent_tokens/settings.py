"""The run presets: ``cpu`` (the default world, sized to a 2-core laptop budget), ``--quick`` (seconds, for tests)
and ``paper`` (the authors' model and recipe: 6 layers × 512, batch 512, lr 3e-4, warm-up 2,500, EMA 0.9999)."""

from __future__ import annotations

from latent_darm.latent_tokens.sweep import RunSettings
from latent_darm.latent_tokens.tasks import WorldConfig
from latent_darm.latent_tokens.train import TrainSettings

# The authors' EMA decay 0.9999 averages over ~10,000 steps, suited to their runs of 20–100 epochs. The CPU preset
# runs 2,400 steps, so 0.999 (a ~1,000-step horizon, over the cosine decay's low-learning-rate end) is the analogue;
# with the warm-up of train.ema_decay the early random weights do not linger.
CPU_EMA = 0.999
# task → (size, difficulty) of the default world
DEFAULT_WORLD = {"sudoku": (4, 8), "countdown": (3, 9)}


def run_settings(
    *,
    task: str = "sudoku",
    size: int | None = None,
    difficulty: int | None = None,
    seed: int = 0,
    quick: bool = False,
    preset: str = "cpu",
) -> RunSettings:
    default_size, default_difficulty = DEFAULT_WORLD[task]
    size = default_size if size is None else size
    if difficulty is None:
        # a Sudoku of another side keeps about the default's share of givens
        difficulty = default_difficulty if size == default_size or task != "sudoku" else round(size * size * 0.5)
    if quick:
        world = WorldConfig(task=task, size=size, difficulty=difficulty, train_size=200, test_size=16, seed=seed)
        train = TrainSettings(layers=1, d_model=32, heads=2, steps=8, batch_size=16, warmup_steps=2, seed=seed,
                              checkpoint_every=4, ema=CPU_EMA)  # fmt: skip
        return RunSettings(world=world, train=train, eval_batch=16)
    if preset == "paper":
        world = WorldConfig(task=task, size=size, difficulty=difficulty, train_size=100_000, test_size=1280, seed=seed)
        train = TrainSettings(layers=6, d_model=512, heads=8, steps=20_000, batch_size=512, lr=3e-4,
                              warmup_steps=2500, ema=0.9999, seed=seed, checkpoint_every=1000)  # fmt: skip
        return RunSettings(world=world, train=train, eval_batch=256)
    world = WorldConfig(task=task, size=size, difficulty=difficulty, train_size=4000, test_size=512, seed=seed)
    train = TrainSettings(layers=3, d_model=64, heads=4, steps=2400, batch_size=32, lr=3e-3, warmup_steps=40,
                          seed=seed, checkpoint_every=100, ema=CPU_EMA)  # fmt: skip
    return RunSettings(world=world, train=train, eval_batch=128)
