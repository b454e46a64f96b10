"""Registers every ``darm`` command (one import per command module)."""

import latent_darm.cli.convert as convert_command  # noqa: F401
import latent_darm.cli.demo as demo_command  # noqa: F401
import latent_darm.cli.diagnose as diagnose_command  # noqa: F401
import latent_darm.cli.eval as eval_command  # noqa: F401
import latent_darm.cli.fetch_gguf as fetch_gguf_command  # noqa: F401
import latent_darm.cli.grade  # noqa: F401
import latent_darm.cli.latent_tokens as latent_tokens_command  # noqa: F401
import latent_darm.cli.report as report_command  # noqa: F401
import latent_darm.cli.solve as solve_command  # noqa: F401
import latent_darm.cli.train_projector as train_projector_command  # noqa: F401
from latent_darm.cli import plan  # noqa: F401
