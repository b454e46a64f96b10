"""``--lookahead`` on ``darm plan`` and ``darm eval``: 'all' is today's exact mode; a count reaches the sampler; the
old names ``--latent-tokens`` / ``--latent-choice`` still work, with one warning line; old specs still load."""

from __future__ import annotations

import json

import pytest

from latent_darm.errors import ConfigError
from latent_darm.models.llada.sampler_config import parse_lookahead
from latent_darm.pipelines.builder import build_spec
from latent_darm.pipelines.factory import sampler_from_role
from latent_darm.pipelines.spec import PipelineSpec


def _plan(darm, llada_dir, *extra: str, warnings: int = 0) -> list[dict]:
    code, out, err = darm(
        "plan", "--planner", llada_dir, "--prompt", "What is 3 + 4?", "--prompt", "Name a colour.",
        "--no-chat", "--gen-length", "16", "--block-length", "8", "--steps", "16", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    assert len([line for line in err.splitlines() if line.startswith("warning:")]) == warnings, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _tokens(plans: list[dict]) -> list[list[int]]:
    return [p["token_ids"] for p in plans]


def test_plan_lookahead_all_is_exact_mode_and_a_count_changes_the_plans(darm, llada_dir):
    default = _tokens(_plan(darm, llada_dir))
    assert _tokens(_plan(darm, llada_dir, "--lookahead", "all")) == default
    assert _tokens(_plan(darm, llada_dir, "--lookahead", "8")) == default  # 8 = every position after block 1
    assert _tokens(_plan(darm, llada_dir, "--lookahead", "9")) == default  # more than follow: all of them
    shorter = _tokens(_plan(darm, llada_dir, "--lookahead", "0"))
    assert shorter != default
    old = _plan(darm, llada_dir, "--latent-tokens", "0", "--latent-choice", "nearest", warnings=1)
    assert _tokens(old) == shorter
    drawn = _tokens(_plan(darm, llada_dir, "--lookahead", "2", "--lookahead-choice", "random"))
    assert _tokens(_plan(darm, llada_dir, "--latent-tokens", "2", "--latent-choice", "random", warnings=1)) == drawn


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--lookahead", "-2"], "lookahead must be ≥ 0, got -2"),
     (["--lookahead", "many"], "--lookahead must be a non-negative integer or 'all'"),
     (["--latent-tokens", "many"], "--latent-tokens must be a non-negative integer or 'all'"),
     (["--lookahead", "2", "--latent-tokens", "2"], "--latent-tokens is the deprecated name of --lookahead"),
     (["--lookahead-choice", "random", "--latent-choice", "random"],
      "--latent-choice is the deprecated name of --lookahead-choice"),
     (["--lookahead", "2", "--lookahead-choice", "random", "--cache", "dual"],
      "lookahead_choice 'random' needs cache 'none'")],
)  # fmt: skip
def test_plan_bad_lookahead_is_one_line_and_exit_2(darm, llada_dir, options, message):
    code, _, err = darm(
        "plan", "--planner", llada_dir, "--prompt", "x", "--gen-length", "16", "--block-length", "8",
        "--steps", "16", *options,
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_eval_spec_carries_lookahead_to_the_sampler_and_leaves_old_specs_alone():
    plain = build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64)
    assert "lookahead" not in plain["planner"]
    assert build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64, lookahead="all") == plain
    held = build_spec(pipeline="text", planner="p", executor="e", gen_length=64, lookahead="4")
    assert sampler_from_role(held["planner"]).lookahead == 4
    drawn = build_spec(
        pipeline="text", planner="p", executor="e", gen_length=64, lookahead=4, lookahead_choice="random"
    )
    assert sampler_from_role(drawn["planner"]).lookahead_choice == "random"
    with pytest.raises(ConfigError, match="--lookahead is not used by --pipeline arm"):
        build_spec(pipeline="arm", executor="llama", lookahead="0")
    assert parse_lookahead("ALL") is None and parse_lookahead(" 3 ") == 3


def test_a_spec_stored_with_latent_tokens_loads_as_lookahead():
    """Results directories written before the rename: their planner role says latent_tokens (and latent_choice)."""
    held = build_spec(pipeline="text", planner="p", executor="e", gen_length=64, lookahead="4")
    drawn = build_spec(
        pipeline="text", planner="p", executor="e", gen_length=64, lookahead=4, lookahead_choice="random"
    )
    for new, old_keys in ((held, {"latent_tokens": 4}), (drawn, {"latent_tokens": 4, "latent_choice": "random"})):
        planner = {k: v for k, v in new["planner"].items() if not k.startswith("lookahead")} | old_keys
        assert PipelineSpec.from_dict({**new, "planner": planner}).to_dict() == new
    unset = {**held, "planner": {**held["planner"], "latent_tokens": None, "latent_choice": "nearest"}}
    del unset["planner"]["lookahead"]
    assert PipelineSpec.from_dict(unset).to_dict() == build_spec(
        pipeline="text", planner="p", executor="e", gen_length=64
    )
