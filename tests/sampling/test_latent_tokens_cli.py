"""``--latent-tokens`` on ``darm plan`` and ``darm eval``: 'all' is today's exact mode; a count reaches the sampler."""

from __future__ import annotations

import json

import pytest

from latent_darm.errors import ConfigError
from latent_darm.pipelines.builder import build_spec
from latent_darm.pipelines.factory import sampler_from_role
from latent_darm.sampling.config import parse_latent_tokens


def _plan(darm, llada_dir, *extra: str) -> list[dict]:
    code, out, err = darm(
        "plan", "--planner", llada_dir, "--prompt", "What is 3 + 4?", "--prompt", "Name a colour.",
        "--no-chat", "--gen-length", "16", "--block-length", "8", "--steps", "16", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _tokens(plans: list[dict]) -> list[list[int]]:
    return [p["token_ids"] for p in plans]


def test_plan_latent_tokens_all_is_exact_mode_and_a_count_changes_the_plans(darm, llada_dir):
    default = _tokens(_plan(darm, llada_dir))
    assert _tokens(_plan(darm, llada_dir, "--latent-tokens", "all")) == default
    assert _tokens(_plan(darm, llada_dir, "--latent-tokens", "8")) == default  # 8 = every position after block 1
    assert _tokens(_plan(darm, llada_dir, "--latent-tokens", "0")) != default


@pytest.mark.parametrize(
    ("value", "message"),
    [("-2", "latent_tokens must be ≥ 0, got -2"), ("many", "--latent-tokens must be a non-negative integer or 'all'"),
     ("9", "latent_tokens 9 exceeds the 8 masked positions")],
)  # fmt: skip
def test_plan_bad_latent_tokens_is_one_line_and_exit_2(darm, llada_dir, value, message):
    code, _, err = darm(
        "plan", "--planner", llada_dir, "--prompt", "x", "--gen-length", "16", "--block-length", "8",
        "--steps", "16", "--latent-tokens", value,
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_eval_spec_carries_latent_tokens_to_the_sampler_and_leaves_old_specs_alone():
    plain = build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64)
    assert "latent_tokens" not in plain["planner"]
    assert build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64, latent_tokens="all") == plain
    held = build_spec(pipeline="text", planner="p", executor="e", gen_length=64, latent_tokens="4")
    assert sampler_from_role(held["planner"]).latent_tokens == 4
    with pytest.raises(ConfigError, match="--latent-tokens is not used by --pipeline arm"):
        build_spec(pipeline="arm", executor="llama", latent_tokens="0")
    assert parse_latent_tokens("ALL") is None and parse_latent_tokens(" 3 ") == 3
