"""Registers every ``darm`` command (one import per command module)."""

import latent_darm.cli.grade  # noqa: F401
from latent_darm.cli import plan  # noqa: F401
