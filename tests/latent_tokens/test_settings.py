"""Every ``darm latent-tokens`` value is checked once, by the settings dataclass that holds it, with the one-line
error naming its option; the CLI only parses text (issue 19: options were validated in both places)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from latent_darm.cli.latent_tokens import parse_ema, parse_knobs, parse_seeds, parse_variants
from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.decoding import DecodeSettings
from latent_darm.latent_tokens.settings import run_settings
from latent_darm.latent_tokens.train import TrainSettings

BASE = run_settings(quick=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": ()}, "--variants: '' names no variant; expected some of mdm, sidm, scdm, ar, ar-mtp"),
        ({"variants": ("mdm", "bogus")}, "--variants: unknown variant 'bogus'"),
        ({"latent_values": (0, -1)}, "--latent-tokens: -1 must be ≥ 0"),
        ({"latent_values": (99,)}, "--latent-tokens: n=99 latent tokens exceeds the 16 masked positions"),
        ({"windows": (0,)}, "--windows: 0 must be ≥ 1"),
        ({"windows": (40,)}, "--windows: window w=40 exceeds the answer length 17; use 'all'"),
        ({"seeds": ()}, "--seeds: '' names no seed"),
        ({"seeds": (1, 2, 1)}, "--seeds: 1 is repeated"),
        ({"seeds": (0, 2**32)}, "--seeds must be an integer from 0 to 4294967295, got 4294967296"),
        ({"decode": DecodeSettings(candidates=18)}, "--candidates: 18 exceeds the answer length 17; use 'all'"),
    ],
)
def test_run_settings_name_the_option_of_a_bad_value(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replace(BASE, **change)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainSettings(steps=0), "--steps: 0 must be ≥ 1"),
        (lambda: replace(BASE.train, ema=1.0), r"--ema: 1.0 must be in \[0, 1\)"),
        (lambda: DecodeSettings(candidates=0), "--candidates: 0 must be ≥ 1"),
        (lambda: DecodeSettings(temperature=float("nan")), "--temperature: nan must be ≥ 0"),
        (lambda: DecodeSettings(temperature=float("inf")), "--temperature: inf must be ≥ 0 and finite"),
    ],
)
def test_train_and_decode_settings_name_the_option_of_a_bad_value(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_the_cli_parses_without_judging_ranges():
    assert parse_knobs("0,-1,all", "--latent-tokens") == (0, -1, None)
    assert parse_seeds("") == () and parse_seeds("3,3") == (3, 3)
    assert parse_variants(" , mdm,, bogus ") == ("mdm", "bogus")
    assert parse_ema("off") is None and parse_ema("1.5") == 1.5
    with pytest.raises(ConfigError, match="--seeds: 'a' is not an integer"):
        parse_seeds("0,a")
