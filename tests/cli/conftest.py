"""Run ``darm`` in-process, capturing exit code, stdout and stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from latent_darm.cli import common
from latent_darm.cli.app import main


@pytest.fixture
def darm(capsys, monkeypatch) -> Callable[..., tuple[int, str, str]]:
    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["darm", *map(str, args)])
        monkeypatch.setattr(common, "DEBUG", False)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
