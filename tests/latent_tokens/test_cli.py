"""``darm latent-tokens``: a --quick run end to end writes every file and a rerun reuses everything; bad input is
one line naming the value, exit code 2."""

from __future__ import annotations

import json

import pytest

from latent_darm.latent_tokens.report import LATENT_FIGURE, SECONDS_FIGURE, TABLE_FILE
from latent_darm.latent_tokens.sweep import RESULTS_FILE


@pytest.mark.slow
def test_quick_run_writes_every_file_and_a_rerun_reuses_it(darm, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    variants = "mdm,sidm,scdm,ar,ar-mtp,ar-ntp"
    code, stdout, err = darm(
        "latent-tokens", "--quick", "--out", out, "--cache-dir", cache, "--no-progress", "--variants", variants
    )
    assert code == 0, err
    for name in (RESULTS_FILE, TABLE_FILE, LATENT_FIGURE, SECONDS_FIGURE, "run.json"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    labels = {(r["variant"], r["value"]) for r in records}
    assert {("mdm", "all"), ("sidm", "0"), ("ar", None), ("ar-ntp", "all")} <= labels
    assert {v for k, v in labels if k == "scdm"} == {"0", "1", "2", "4", "8", "all"}
    assert {v for k, v in labels if k == "ar-mtp"} == {"1", "2", "4", "8", "all"}
    assert "| SCDM | n=all |" in stdout
    # scdm's cost grows with n: tokens per pass at n=0 < n=8 < n=all
    cost = {r["value"]: r["tokens_per_pass"] for r in records if r["variant"] == "scdm"}
    assert cost["0"] < cost["8"] < cost["all"]
    again = darm(
        "latent-tokens", "--quick", "--out", out, "--cache-dir", cache, "--no-progress", "--variants", variants
    )
    assert again[0] == 0
    run = json.loads((out / "run.json").read_text())
    windows = [f"ar-mtp w={w}" for w in (1, 2, 4, 8, 17)]  # one AR+MTP model per swept w (all = 17)
    assert sorted(run["reused_models"]) == sorted(["mdm", "sidm", "scdm", "ar", *windows, "ar-ntp"])
    assert len((out / RESULTS_FILE).read_text().splitlines()) == len(records)  # nothing re-evaluated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variants", "mdm,bogus"], "unknown variant 'bogus'"),
        (["--task", "chess"], "--task must be one of sudoku, countdown; got 'chess'"),
        (["--latent-tokens", "0,-1"], "--latent-tokens: -1 must be ≥ 0"),
        (["--latent-tokens", "two"], "--latent-tokens: 'two' is not an integer"),
        (["--windows", "0"], "--windows: 0 must be ≥ 1"),
        (["--latent-tokens", "99"], "n=99 latent tokens exceeds the 16 masked positions"),
        (["--windows", "40"], "window w=40 exceeds the answer length 17"),
        (["--selection", "best"], "--selection must be one of random, confidence; got 'best'"),
        (["--k", "0"], "--k: tokens per step must be at least 1, got 0"),
        (["--candidates", "0"], "--candidates: 0 must be ≥ 1"),
        (["--candidates", "18"], "--candidates: 18 exceeds the answer length 17; use 'all'"),
        (["--candidates", "1,2"], "--candidates: '1,2' must be one integer"),
        (["--temperature", "-0.5"], "--temperature: -0.5 must be ≥ 0"),
        (["--temperature", "nan"], "--temperature: nan must be ≥ 0"),
        (["--seeds", ""], "--seeds: '' names no seed"),
        (["--seeds", "0,1,0"], "--seeds: 0 is repeated"),
        (["--seeds", "0,-1"], "--seeds must be an integer from 0 to 4294967295, got -1"),
        (["--seeds", "0," + "9" * 30], "--seeds must be an integer from 0 to 4294967295, got " + "9" * 30),
        (["--seeds", "a"], "--seeds: 'a' is not an integer"),
        (["--ema", "1.5"], "--ema: 1.5 must be in [0, 1)"),
        (["--ema", "high"], "--ema: 'high' is not a number"),
        (["--preset", "huge"], "--preset must be one of cpu, paper; got 'huge'"),
        (["--dtype", "int8"], "--dtype must be one of"),
    ],
)
def test_bad_settings_are_one_line_errors(darm, tmp_path, args, message):
    code, _, err = darm("latent-tokens", "--quick", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("row", "message"),
    [('{"puzzle": "12.."}', "has 4 cells"), ('{"puzzle": "1..............x"}', "symbol 'x' outside the vocabulary")],
)
def test_bad_puzzle_files_are_one_line_errors(darm, tmp_path, row, message):
    path = tmp_path / "puzzles.jsonl"
    path.write_text(row + "\n")
    code, _, err = darm("latent-tokens", "--quick", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c",
                        "--test-file", path)  # fmt: skip
    assert code == 2
    assert message in err and "puzzles.jsonl:1" in err and len(err.strip().splitlines()) == 1, err


def _without_timing(path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["key"]: {k: v for k, v in r.items() if k != "seconds_per_puzzle"} for r in records}


@pytest.mark.parametrize("damage", ["torn-last-line", "bad-middle-line"])
def test_a_damaged_results_file_resumes_to_the_uninterrupted_results(darm, tmp_path, damage):
    cache = tmp_path / "cache"
    args = ("latent-tokens", "--quick", "--cache-dir", cache, "--no-progress", "--variants", "sidm,scdm",
            "--latent-tokens", "0,1,all")  # fmt: skip
    code, _, err = darm(*args, "--out", tmp_path / "straight")
    assert code == 0, err
    straight = tmp_path / "straight" / RESULTS_FILE
    path = tmp_path / "resumed" / RESULTS_FILE
    path.parent.mkdir()
    rows = straight.read_text().splitlines(keepends=True)
    assert len(rows) == 5  # sidm under random order and top-probability, scdm at three n
    if damage == "torn-last-line":
        rows[-1] = rows[-1][:40]
    else:
        rows[1] = rows[1][:30] + "\n"
    path.write_text("".join(rows))
    code, _, err = darm(*args, "--out", tmp_path / "resumed")
    assert code == 0, err
    assert _without_timing(path) == _without_timing(straight)
    side = path.with_name(RESULTS_FILE + ".bad")
    if damage == "bad-middle-line":
        assert side.read_text() == rows[1]
        assert "results.jsonl: moved 1 unreadable line(s) (line 2: malformed JSON)" in err
    else:
        assert not side.exists() and "moved" not in err
