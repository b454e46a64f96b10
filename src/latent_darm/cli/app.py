"""The ``darm`` command line: one typer app; each command is a function ``<name>_command`` in its own module of
this package, registered below by name (the list of commands is this file).

User mistakes surface as :class:`~latent_darm.errors.DarmError` and are printed as one line on stderr with exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from latent_darm.cli import common
from latent_darm.cli.convert import convert_command
from latent_darm.cli.demo import demo_command
from latent_darm.cli.diagnose import diagnose_command
from latent_darm.cli.eval import eval_command
from latent_darm.cli.fetch_gguf import fetch_gguf_command
from latent_darm.cli.grade import grade_command
from latent_darm.cli.latent_tokens import latent_tokens_command
from latent_darm.cli.plan import plan_command
from latent_darm.cli.report import report_command
from latent_darm.cli.solve import solve_command
from latent_darm.cli.train_projector import train_projector_command

app = typer.Typer(
    name="darm",
    help="Latent-DARM: a diffusion planner and an autoregressive executor, in text or latent space.\n\n"
    "Bad input (a missing, corrupt or truncated checkpoint, weights that do not match their config, a malformed data "
    "or config file, impossible settings such as 0 steps, an unknown --device, an unwritable --out, a full disk) is "
    "reported as one line naming the culprit, with exit code 2; --debug shows the traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # darm --install-completion: shells complete commands, options and their choices
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    common.DEBUG = common.DEBUG or debug


# In the order ``darm --help`` lists them.
COMMANDS = {
    "convert": convert_command,
    "demo": demo_command,
    "eval": eval_command,
    "diagnose": diagnose_command,
    "fetch-gguf": fetch_gguf_command,
    "grade": grade_command,
    "latent-tokens": latent_tokens_command,
    "report": report_command,
    "solve": solve_command,
    "train-projector": train_projector_command,
    "plan": plan_command,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:
    # ``--debug`` is accepted anywhere on the line, not only before the command name.
    if "--debug" in sys.argv[1:]:
        common.DEBUG = True
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    sys.exit(common.run_app(app))


if __name__ == "__main__":  # ``python -m latent_darm.cli.app``, as ``accelerate launch -m`` runs it
    main()
