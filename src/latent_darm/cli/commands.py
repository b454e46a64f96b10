"""Registers every ``darm`` command (one import per command module)."""

from latent_darm.cli import plan  # noqa: F401
