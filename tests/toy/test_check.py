"""The world-check tool (``python -m latent_darm.toy.build --check``): the numbers behind the planner's step budget."""

from __future__ import annotations

from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.check import check_world, step_budgets


def test_step_budgets_are_the_demos() -> None:
    assert step_budgets(8) == [8, 4, 2]
    assert step_budgets(4) == [4, 2, 1]
    assert step_budgets(2) == [2, 1]


def test_check_measures_plans_at_every_step_budget(artifacts: WorldArtifacts) -> None:
    lines: list[str] = []
    rows = check_world(artifacts, out=lines.append)
    levels = set(artifacts.config.levels)
    for steps in step_budgets(artifacts.config.plan_length):
        for name in (f"planner plan exact, {steps} steps", f"executor + planner plan, {steps} steps"):
            assert set(rows[name]) == levels and all(0.0 <= v <= 1.0 for v in rows[name].values())
    # The executor follows a gold plan on this world far better than it answers directly.
    gold, direct = rows["executor + gold plan"], rows["executor direct"]
    assert sum(gold.values()) > sum(direct.values())
    header = lines[0].split(" | ")
    assert header[-2:] == ["all", "seconds |"]
    assert any(line.startswith("| planner plan exact, 2 steps |") for line in lines)
