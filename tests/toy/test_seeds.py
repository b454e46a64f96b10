"""``darm demo --seeds``: every row's mean ± sd over the seeds and each seed's paired tests, from the seeds' own
outputs (made-up runs here: the arithmetic is what is tested; test_demo.py runs the real demo)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from latent_darm.evaluation.report import Run, mcnemar_exact
from latent_darm.toy.seeds import SEEDS_CSV, SEEDS_MD, SEEDS_PAIRED_CSV, write_seed_report


def fake_outcome(directory: Path, right: dict[str, int], pairs: list[tuple[str, str, int, int]]) -> SimpleNamespace:
    """A seed's outcome: ``right[label]`` of 10 questions right per configuration, and its paired CSV."""
    directory.mkdir(parents=True)
    runs = [
        Run(directory / label, {}, [{"id": f"q{i}", "correct": i < k} for i in range(10)], label)
        for label, k in right.items()
    ]
    with (directory / "toy_paired.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "only_a_right", "only_b_right"])
        writer.writerows(pairs)
    return SimpleNamespace(runs=runs, out_dir=directory, fingerprint=directory.name)


def test_mean_sd_and_paired_tests_over_seeds(tmp_path):
    outcomes = [
        fake_outcome(tmp_path / "s0", {"latent": 6, "text": 3, "only seed 0": 1}, [("latent", "text", 9, 1)]),
        fake_outcome(tmp_path / "s1", {"latent": 8, "text": 4}, [("latent", "text", 12, 0)]),
        fake_outcome(tmp_path / "s2", {"latent": 7, "text": 5}, [("latent", "text", 3, 4)]),
    ]
    write_seed_report(outcomes, (0, 1, 2), tmp_path)  # type: ignore[arg-type]
    with (tmp_path / SEEDS_CSV).open() as handle:
        rows = {r["configuration"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"latent", "text"}  # a row that not every seed ran has no mean
    assert float(rows["latent"]["mean"]) == pytest.approx(70.0)
    assert float(rows["latent"]["sd"]) == pytest.approx(statistics.stdev([60.0, 80.0, 70.0]))
    with (tmp_path / SEEDS_PAIRED_CSV).open() as handle:
        (pair,) = csv.DictReader(handle)
    assert float(pair["seed 1 p"]) == pytest.approx(mcnemar_exact(12, 0), rel=1e-5)
    assert (pair["a_wins"], pair["b_wins"]) == ("2", "0")  # seeds 0 and 1 at p < 0.05; seed 2 no verdict
    assert (pair["pooled only_a"], pair["pooled only_b"]) == ("24", "5")
    assert float(pair["pooled p"]) == pytest.approx(mcnemar_exact(24, 5), rel=1e-5)
    markdown = (tmp_path / SEEDS_MD).read_text()
    assert "| latent | 60.0 | 80.0 | 70.0 | 70.0 ± 10.0 |" in markdown
    assert "12/0, p 0.000488" in markdown.replace("4.9e-04", "0.000488") and "2/3 A, 0/3 B" in markdown
