"""The ``darm`` command line: one typer app; each command lives in its own module of this package.

User mistakes surface as :class:`~latent_darm.errors.DarmError` and are printed as one line on stderr with exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from latent_darm.cli import common

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


def _register() -> None:
    """Import command modules; each adds its commands to ``app``."""
    from latent_darm.cli import commands  # noqa: F401


def main() -> None:
    # ``--debug`` is accepted anywhere on the line, not only before the command name.
    if "--debug" in sys.argv[1:]:
        common.DEBUG = True
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    _register()
    sys.exit(common.run_app(app))


if __name__ == "__main__":
    # ``python -m latent_darm.cli.app`` (as ``accelerate launch -m`` runs it): commands register on the importable
    # module's app, not on this ``__main__`` copy, so run that one.
    from latent_darm.cli.app import main as run_importable

    run_importable()
