"""``darm plan``: sample plans from a diffusion planner."""

from __future__ import annotations

from latent_darm.cli.app import app


@app.command()
def plan() -> None:
    """Sample plans from a diffusion planner (in progress)."""
