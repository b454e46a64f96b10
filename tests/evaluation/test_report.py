"""``darm report`` numbers against hand computation: accuracy, Wilson interval, token and time means, levels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from latent_darm.errors import DataError
from latent_darm.evaluation.report import config_label, wilson_interval, write_report
from latent_darm.evaluation.runner import CONFIG_FILE, RESULTS_FILE, evaluate, examples_fingerprint
from tests.evaluation.test_runner import FakePipeline, make_examples, right_unless_multiple_of_three

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results_dir(path: Path, *, label: str, benchmark: str = "fake", everything_right: bool = False, n: int = 10):
    pipeline = FakePipeline(
        setting=label, is_right=(lambda q: True) if everything_right else right_unless_multiple_of_three
    )
    config = {"benchmark": benchmark, "label": label, "examples": {"n": n}}
    evaluate(pipeline, make_examples(n, levels=True), path, batch_size=4, config=config, progress=False)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100


def test_wilson_interval_matches_hand_computation():
    # 6/10: p = .6, z² = 3.8415; centre = (.6 + .19207) / 1.38415 = .57224; half = 1.96·√(.024 + .0096) / 1.38415
    low, high = wilson_interval(6, 10)
    assert (low, high) == (pytest.approx(0.312673, abs=1e-6), pytest.approx(0.831819, abs=1e-6))
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson_interval(10, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_report_tables_csv_levels_and_figure(tmp_path):
    a = results_dir(tmp_path / "a", label="half right")
    b = results_dir(tmp_path / "b", label="all right", everything_right=True)
    c = results_dir(tmp_path / "c", label="other", benchmark="other", n=4)
    written = write_report([a, b, c], tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "report.md",
            "fake.csv",
            "fake_levels.csv",
            "fake_accuracy_vs_tokens.png",
            "other.csv",
            "other_levels.csv",
            "other_accuracy_vs_tokens.png",
        ]
    )
    rows = {row["label"]: row for row in read_csv(tmp_path / "out" / "fake.csv")}
    half = rows["half right"]
    # planner tokens 10 + i, executor 2 + i % 2, passes 10 + i and 3, seconds .25 or .5, for i = 0..9
    assert float(half["accuracy"]) == pytest.approx(0.6)
    assert (float(half["ci95_low"]), float(half["ci95_high"])) == (
        pytest.approx(0.312674, abs=1e-6),
        pytest.approx(0.83182, abs=1e-6),
    )
    assert float(half["planner_tokens"]) == pytest.approx(14.5)
    assert float(half["executor_tokens"]) == pytest.approx(2.5)
    assert float(half["total_tokens"]) == pytest.approx(17.0)
    assert float(half["planner_forward_passes"]) == pytest.approx(14.5)
    assert float(half["executor_forward_passes"]) == pytest.approx(3.0)
    assert float(half["seconds_per_question"]) == pytest.approx(0.375)
    assert (half["n"], half["correct"]) == ("10", "6")
    assert float(rows["all right"]["accuracy"]) == 1.0

    # levels 1 + i % 3: level 1 holds i = 0, 3, 6, 9 (all wrong for "half right"), levels 2 and 3 all right
    levels = [(r["label"], r["level"], r["n"], r["correct"]) for r in read_csv(tmp_path / "out" / "fake_levels.csv")]
    assert levels[:3] == [("half right", "1", "4", "0"), ("half right", "2", "3", "3"), ("half right", "3", "3", "3")]

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## fake" in markdown and "## other" in markdown and "### By level" in markdown
    assert "| half right | 10 | 60.0 | [31.3, 83.2] | 14.5 | 2.5 | 17.0 | 14.5 / 3.0 | 0.375 |" in markdown
    assert "![accuracy against tokens](fake_accuracy_vs_tokens.png)" in markdown
    assert_png(tmp_path / "out" / "fake_accuracy_vs_tokens.png")
    assert_png(tmp_path / "out" / "other_accuracy_vs_tokens.png")


def test_an_incomplete_run_shows_how_many_of_the_selection_are_done(tmp_path):
    run = results_dir(tmp_path / "a", label="partial", n=4)
    config = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps({**config, "examples": {"n": 8}}))
    write_report([run], tmp_path / "out")
    assert "| partial | 4/8 |" in (tmp_path / "out" / "report.md").read_text()


def test_same_labels_are_told_apart_by_directory(tmp_path):
    a = results_dir(tmp_path / "run1", label="same")
    b = results_dir(tmp_path / "run2", label="same", everything_right=True)
    write_report([a, b], tmp_path / "out")
    labels = [row["label"] for row in read_csv(tmp_path / "out" / "fake.csv")]
    assert labels == ["same [run1]", "same [run2]"]


def test_labels_come_from_the_spec_unless_given():
    spec = {
        "kind": "latent",
        "planner": {"kind": "ddlm", "model": "GSAI-ML/LLaDA-8B-Instruct", "gen_length": 64},
        "executor": {"kind": "arm", "model": "/ckpt/Llama-3.2-3B-Instruct/", "max_new_tokens": 16},
        "latent_noise": 0.5,
    }
    assert (
        config_label({"spec": spec})
        == "latent ddlm→arm, plan 64, noise 0.5 (LLaDA-8B-Instruct → Llama-3.2-3B-Instruct)"
    )
    arm = {
        "kind": "arm",
        "planner": None,
        "executor": {"kind": "arm", "model": "Qwen/Qwen3-8B"},
        "chain_of_thought": True,
    }
    assert config_label({"spec": arm}) == "arm CoT (Qwen3-8B)"
    assert config_label({"spec": spec, "label": "mine"}) == "mine"
    assert config_label({"pipeline": {"pipeline": "fake"}}) == "fake"


def test_directories_that_are_not_results_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not a results directory"):
        write_report([tmp_path], tmp_path / "out")
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(DataError, match="no finished items yet"):
        write_report([tmp_path], tmp_path / "out")


def fingerprinted_run(path: Path, n: int = 4) -> Path:
    """A finished run whose config.json fingerprints its selection, as ``darm eval`` writes it."""
    config = {"benchmark": "fake", "label": "run", "examples": examples_fingerprint(make_examples(n))}
    evaluate(FakePipeline(setting="run"), make_examples(n), path, batch_size=4, config=config, progress=False)
    return path


def edit_results(run: Path, edit) -> None:
    records = [json.loads(line) for line in (run / RESULTS_FILE).read_text().splitlines()]
    edit(records)
    (run / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("correct", "yes", r"field 'correct' must be true or false, got 'yes'"),
        ("correct", 1, r"field 'correct' must be true or false, got 1"),
        ("truncated", "no", r"field 'truncated' must be true or false, got 'no'"),
        ("seconds", "fast", r"field 'seconds' must be a number >= 0, got 'fast'"),
        ("executor_tokens", -3, r"field 'executor_tokens' must be a number >= 0, got -3"),
        ("total_tokens", True, r"field 'total_tokens' must be a number >= 0, got True"),
    ],
)
def test_a_result_field_of_the_wrong_type_is_refused_not_counted(tmp_path, field, value, message):
    """Before: ``"correct": "yes"`` counted as a correct answer (bool of a non-empty string)."""
    run = fingerprinted_run(tmp_path / "run")
    write_report([run], tmp_path / "good")  # the untouched run reports

    def damage(records):
        records[1][field] = value

    edit_results(run, damage)
    with pytest.raises(DataError, match=rf"results\.jsonl: item 'q1': .*{message}"):
        write_report([run], tmp_path / "out")


def test_results_outside_the_runs_selection_are_refused(tmp_path):
    run = fingerprinted_run(tmp_path / "run")
    extra = tmp_path / "extra"
    edit_results(run, lambda records: records.append({**records[0], "id": "not-selected"}))
    with pytest.raises(DataError, match=r"5 results but the run selected 4 items"):
        write_report([run], extra)
    edit_results(run, lambda records: records.pop())  # four again, all ids as selected
    write_report([run], extra)
    edit_results(run, lambda records: records[2].update(id="not-selected"))
    with pytest.raises(DataError, match=r"the results are not the run's selection"):
        write_report([run], extra)


@pytest.mark.parametrize(
    "name", ["../../escaped", "/tmp/absolute", "..", ".", "a/../../b", "..\\..\\windows", "~/home", ""]
)
def test_benchmark_names_and_labels_never_place_files_outside_the_output_directory(tmp_path, name):
    """Both come from a results directory's config.json (user input): whatever they say, every file the report
    writes lands directly in --out."""
    run = results_dir(tmp_path / "work" / "run", label=name or "x", benchmark=name, n=4)
    out = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}
    written = write_report([run], out)
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p.parent == out for p in created - {out}), sorted(created)
    assert set(written) == created - {out}
    assert not any(part in (".", "..") for path in written for part in path.relative_to(out).parts)


def test_benchmarks_whose_names_slug_alike_keep_their_own_files(tmp_path):
    a = results_dir(tmp_path / "a", label="a", benchmark="x/y", n=4)
    b = results_dir(tmp_path / "b", label="b", benchmark="x_y", n=4, everything_right=True)
    written = write_report([a, b], tmp_path / "out")
    csvs = sorted(p.name for p in written if p.name.endswith(".csv") and "levels" not in p.name)
    assert csvs == ["x_y-2.csv", "x_y.csv"]
    assert {row["label"] for name in csvs for row in read_csv(tmp_path / "out" / name)} == {"a", "b"}


def test_a_benchmark_named_like_another_benchmarks_file_keeps_its_own_files(tmp_path):
    """``x``'s paired and levels tables are ``x_paired.csv`` and ``x_levels.csv``: benchmarks named ``x_paired`` and
    ``x_levels`` get other stems, so all twelve files are written and each holds its own benchmark's runs."""
    runs, pairs = [], []
    for benchmark in ("x", "x_paired", "x_levels"):
        a = results_dir(tmp_path / benchmark / "a", label=f"{benchmark} A", benchmark=benchmark, n=4)
        b = results_dir(tmp_path / benchmark / "b", label=f"{benchmark} B", benchmark=benchmark, n=4)
        runs += [a, b]
        pairs.append((f"{benchmark} A", f"{benchmark} B"))
    written = write_report(runs, tmp_path / "out", pairs=pairs)
    assert len(written) == len(set(written)) == 1 + 3 * 4
    assert {"x.csv", "x_paired.csv", "x_levels.csv", "x_accuracy_vs_tokens.png"} <= {p.name for p in written}
    owners = {}
    for path in written:
        if path.suffix == ".csv":
            labels = {row.get("label") or row["a"] for row in read_csv(path)}
            assert len({label.rsplit(" ", 1)[0] for label in labels}) == 1, (path.name, labels)
            owners[path.name] = labels.pop().rsplit(" ", 1)[0]
    assert owners["x_paired.csv"] == owners["x_levels.csv"] == owners["x.csv"] == "x"
    assert sorted(owners.values()).count("x_paired") == sorted(owners.values()).count("x_levels") == 3
