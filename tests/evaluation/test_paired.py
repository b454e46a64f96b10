"""Paired latent-vs-text statistics: the exact McNemar test against a brute-force binomial sum, and the report's
pairing by question id and by planner settings."""

from __future__ import annotations

import csv
import itertools
import random
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latent_darm.errors import ConfigError
from latent_darm.evaluation.report import format_p, mcnemar_exact, write_report
from latent_darm.evaluation.runner import evaluate
from tests.evaluation.test_runner import FakePipeline, make_examples, number_in


def brute_force_p(only_a: int, only_b: int) -> float:
    """Enumerate every one of the 2^n sign patterns of n discordant pairs under H0 (each side equally likely) and
    add the probability of those at least as far from n/2 as the one seen."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    seen = abs(only_a - n / 2)
    extreme = sum(1 for signs in itertools.product((0, 1), repeat=n) if abs(sum(signs) - n / 2) >= seen)
    return float(min(Fraction(1), Fraction(extreme, 2**n)))


def test_mcnemar_matches_brute_force_on_random_counts():
    rng = random.Random(18)
    for _ in range(40):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        assert mcnemar_exact(a, b) == pytest.approx(brute_force_p(a, b), rel=1e-12), (a, b)
        assert mcnemar_exact(a, b) == mcnemar_exact(b, a)


def test_mcnemar_edge_cases():
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pairs: no evidence either way
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)  # all discordant one way
    assert mcnemar_exact(0, 1) == 1.0
    assert mcnemar_exact(108, 82) == pytest.approx(0.0693, abs=5e-4)  # the prefix + LoRA vs text case
    assert mcnemar_exact(2000, 0) == 0.0 or mcnemar_exact(2000, 0) < 1e-300  # no overflow at large n
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def spec(kind: str, steps: int, executor: str = "arm", **planner_settings: float) -> dict:
    planner = {"kind": "ddlm", "model": "planner", "gen_length": 8, "steps": steps, "cache": "none"}
    if kind == "latent":  # what a latent spec stores besides (its projector's sampler defaults): not compared
        planner |= {"denoise_fraction": 1.0, "latent_rows": "plan", "remasking": "low_confidence"}
    return {"kind": kind, "planner": planner | planner_settings, "executor": {"kind": executor, "model": "executor"}}


def run_dir(
    path: Path, label: str, kind: str, steps: int, right: set[int], n: int = 12, **spec_settings: object
) -> Path:
    pipeline = FakePipeline(setting=label, is_right=lambda q: number_in(q) in right)
    config = {"benchmark": "fake", "label": label, "spec": spec(kind, steps, **spec_settings), "examples": {"n": n}}
    evaluate(pipeline, make_examples(n), path, batch_size=4, config=config, progress=False)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_pairs_latent_with_text_at_the_same_planner_settings(tmp_path):
    # latent right on 0..7, text right on 4..11 minus 5 -> on shared ids 0..11: only latent 0..3 and 5, only text 8..11
    latent = run_dir(tmp_path / "latent", "latent 8", "latent", 8, set(range(8)))
    text = run_dir(tmp_path / "text", "text 8", "text", 8, set(range(4, 12)) - {5})
    other = run_dir(tmp_path / "text2", "text 2", "text", 2, set())  # another budget: not paired
    printed: list[str] = []
    write_report([latent, text, other], tmp_path / "out", echo=printed.append)
    rows = read_csv(tmp_path / "out" / "fake_paired.csv")
    assert [(r["a"], r["b"]) for r in rows] == [("latent 8", "text 8")]
    row = rows[0]
    assert (row["n"], row["a_correct"], row["b_correct"], row["only_a_right"], row["only_b_right"]) == (
        "12",
        "8",
        "7",
        "5",
        "4",
    )
    assert float(row["p_mcnemar"]) == pytest.approx(brute_force_p(5, 4), abs=1e-6)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "### Paired comparisons" in markdown and "| latent 8 | text 8 | 12 | 66.7 | 58.3 | 5 | 4 | 1 |" in markdown
    assert len(printed) == 1 and "| latent 8 | text 8 |" in printed[0]


def test_pairs_need_the_same_executor_kind_and_denoised_fraction(tmp_path):
    """The demo's rows: latent DDLM→ARM is compared with text DDLM→ARM only, not with text DDLM→DDLM (same planner,
    diffusion executor), not with text from a plan stopped after half of its steps, and a noised-latents control
    is not paired at all."""
    latent = run_dir(tmp_path / "latent", "latent", "latent", 8, {0})
    half = run_dir(tmp_path / "latent-half", "latent half", "latent", 8, {0}, denoise_fraction=0.5)
    text = run_dir(tmp_path / "text", "text", "text", 8, {1})
    text_ddlm = run_dir(tmp_path / "text-ddlm", "text DDLM", "text", 8, {1}, executor="ddlm")
    text_half = run_dir(tmp_path / "text-half", "text half", "text", 8, {1}, denoise_fraction=0.5)
    noise = tmp_path / "noise"
    pipeline = FakePipeline(setting="noise", is_right=lambda q: False)
    config = {"benchmark": "fake", "label": "noise", "spec": spec("latent", 8) | {"latent_noise": 100.0}}
    evaluate(pipeline, make_examples(12), noise, batch_size=4, config=config, progress=False)
    write_report([latent, half, text, text_ddlm, text_half, noise], tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "fake_paired.csv")
    assert sorted((r["a"], r["b"]) for r in rows) == [("latent", "text"), ("latent half", "text half")]


def test_small_p_values_are_printed_not_rounded_to_zero(tmp_path):
    assert format_p(0.0693) == "0.0693" and format_p(1.0) == "1"
    assert format_p(2.5e-4) == "2.5e-04"
    assert format_p(2 / 2**40) == "<1e-6" and format_p(0.0) == "<1e-6"
    latent = run_dir(tmp_path / "latent", "L", "latent", 8, set(range(40)), n=40)
    text = run_dir(tmp_path / "text", "T", "text", 8, set(), n=40)
    write_report([latent, text], tmp_path / "out")
    (row,) = read_csv(tmp_path / "out" / "fake_paired.csv")
    assert float(row["p_mcnemar"]) == pytest.approx(2 / 2**40, rel=1e-5)  # was written as 0.0
    assert "| L | T | 40 | 100.0 | 0.0 | 40 | 0 | <1e-6 |" in (tmp_path / "out" / "report.md").read_text()


def test_pairs_use_only_the_questions_both_answered(tmp_path):
    latent = run_dir(tmp_path / "latent", "L", "latent", 8, set(range(12)), n=12)
    text = run_dir(tmp_path / "text", "T", "text", 8, set(), n=5)  # answered only q0..q4
    write_report([latent, text], tmp_path / "out")
    (row,) = read_csv(tmp_path / "out" / "fake_paired.csv")
    assert (row["n"], row["only_a_right"], row["only_b_right"]) == ("5", "5", "0")


def test_explicit_pairs_and_their_errors(tmp_path):
    a = run_dir(tmp_path / "a", "A", "text", 8, {0, 1})
    b = run_dir(tmp_path / "b", "B", "text", 2, {1})
    write_report([a, b], tmp_path / "out", pairs=[("A", "b")])  # by label, then by directory name
    (row,) = read_csv(tmp_path / "out" / "fake_paired.csv")
    assert (row["a"], row["b"], row["only_a_right"], row["only_b_right"]) == ("A", "B", "1", "0")
    with pytest.raises(ConfigError, match="--pair: no results directory matches 'C'"):
        write_report([a, b], tmp_path / "out2", pairs=[("A", "C")])


def test_cli_prints_the_paired_table(tmp_path):
    from latent_darm.cli.app import app

    latent = run_dir(tmp_path / "latent", "L", "latent", 8, {0})
    text = run_dir(tmp_path / "text", "T", "text", 8, {1})
    result = CliRunner().invoke(app, ["report", str(latent), str(text), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "paired comparisons (exact McNemar)" in result.output and "| L | T | 12 |" in result.output
