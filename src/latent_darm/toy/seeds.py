"""``darm demo --seeds 0,1,2``: the demo once per world seed, then every row's mean ± sd over the seeds.

Each seed builds its own world (data, executor, planner, projectors: all seeded) and writes its whole demo output
to ``OUT/seed<N>/`` (the one-seed ``darm demo`` layout, kept as it is). The aggregate goes beside them:

- ``seeds.md``: accuracy per seed and mean ± sd (sample standard deviation, n − 1) per configuration, then every
  paired test of the demo per seed (only-A-right / only-B-right, exact McNemar p), pooled over the seeds (the
  discordant counts summed: a stratified exact test) and on how many seeds A or B was ahead with p < 0.05;
- ``seeds.csv`` and ``seeds_paired.csv``: the same numbers, one line per configuration or pair.

A seed's results stay in its directory, so a rerun resumes each seed where it stopped.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latent_darm.evaluation.report import format_p, markdown_table, mcnemar_exact
from latent_darm.io import atomic_write_text
from latent_darm.toy.demo import DemoOutcome

SEEDS_MD, SEEDS_CSV, SEEDS_PAIRED_CSV = "seeds.md", "seeds.csv", "seeds_paired.csv"
ALPHA = 0.05


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class SeedRow:
    """One configuration over the seeds: accuracy (%) per seed, in seed order."""

    label: str
    accuracy: tuple[float, ...]

    @property
    def mean_sd(self) -> tuple[float, float]:
        return mean_sd(self.accuracy)


@dataclass(frozen=True)
class SeedPair:
    """One paired test over the seeds: (only A right, only B right) per seed."""

    a: str
    b: str
    counts: tuple[tuple[int, int], ...]

    def p_values(self) -> list[float]:
        return [mcnemar_exact(only_a, only_b) for only_a, only_b in self.counts]

    def wins(self) -> int:
        """Seeds on which A was ahead of B with p < :data:`ALPHA`."""
        return sum(a > b and p < ALPHA for (a, b), p in zip(self.counts, self.p_values(), strict=True))

    def losses(self) -> int:
        return sum(a < b and p < ALPHA for (a, b), p in zip(self.counts, self.p_values(), strict=True))

    def pooled(self) -> tuple[int, int, float]:
        """Discordant counts summed over the seeds and their exact McNemar p: under "neither is better" each
        seed's discordant questions split 50/50, so their sum does too (a stratified exact test)."""
        only_a, only_b = sum(a for a, _ in self.counts), sum(b for _, b in self.counts)
        return only_a, only_b, mcnemar_exact(only_a, only_b)


def seed_rows(outcomes: Sequence[DemoOutcome]) -> list[SeedRow]:
    """Every configuration of the first seed (in its order) that every seed ran."""
    by_seed = [{run.label: run for run in outcome.runs} for outcome in outcomes]
    rows = []
    for label in by_seed[0]:
        if all(label in runs for runs in by_seed):
            accuracy = tuple(100 * _accuracy(runs[label].records) for runs in by_seed)
            rows.append(SeedRow(label, accuracy))
    return rows


def _accuracy(records: Sequence[dict]) -> float:
    return sum(bool(r.get("correct")) for r in records) / len(records) if records else math.nan


def seed_pairs(outcomes: Sequence[DemoOutcome]) -> list[SeedPair]:
    """The paired tests every seed's ``toy_paired.csv`` holds, in the first seed's order."""
    tables = [_read_pairs(outcome.out_dir / "toy_paired.csv") for outcome in outcomes]
    return [
        SeedPair(a, b, tuple(table[a, b] for table in tables))
        for a, b in tables[0]
        if all((a, b) in table for table in tables)
    ]


def _read_pairs(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {(r["a"], r["b"]): (int(r["only_a_right"]), int(r["only_b_right"])) for r in csv.DictReader(handle)}


def _pm(values: Sequence[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.1f} ± {sd:.1f}"


def accuracy_cells(row: SeedRow) -> list[str]:
    return [row.label, *(f"{a:.1f}" for a in row.accuracy), _pm(row.accuracy)]


def pair_cells(pair: SeedPair) -> list[str]:
    per_seed = [f"{a}/{b}, p {format_p(p)}" for (a, b), p in zip(pair.counts, pair.p_values(), strict=True)]
    n = len(pair.counts)
    only_a, only_b, p = pair.pooled()
    verdicts = f"{pair.wins()}/{n} A, {pair.losses()}/{n} B"
    return [pair.a, pair.b, *per_seed, f"{only_a}/{only_b}, p {format_p(p)}", verdicts]


def write_seed_report(outcomes: Sequence[DemoOutcome], seeds: Sequence[int], out: Path) -> list[Path]:
    """``seeds.md``, ``seeds.csv`` and ``seeds_paired.csv`` in ``out``; returns their paths."""
    rows, pairs = seed_rows(outcomes), seed_pairs(outcomes)
    names = [f"seed {s}" for s in seeds]
    fingerprints = ", ".join(f"seed {s}: {o.fingerprint}" for s, o in zip(seeds, outcomes, strict=True))
    accuracy = markdown_table(["configuration", *names, "mean ± sd"], [accuracy_cells(r) for r in rows])
    headers = ["A", "B", *(f"{n}: only A / only B right, McNemar p" for n in names), "pooled", f"p < {ALPHA} for"]
    paired = markdown_table(headers, [pair_cells(p) for p in pairs])
    text = (
        f"# darm demo over seeds {', '.join(map(str, seeds))}\n\n"
        f"Demo fingerprints: {fingerprints}. Each seed's full report: `seed<N>/report.md`.\n\n"
        "## Accuracy % on the test split (mean ± sample sd over the seeds)\n\n"
        f"{accuracy}\n\n## Paired comparisons per seed (exact McNemar)\n\n{paired}\n"
    )
    paths = [out / SEEDS_MD, out / SEEDS_CSV, out / SEEDS_PAIRED_CSV]
    atomic_write_text(paths[0], text)
    atomic_write_text(paths[1], _csv(["configuration", *names, "mean", "sd"], [_row_csv(r) for r in rows]))
    pair_headers = [
        "a", "b", *(f"{n} {k}" for n in names for k in ("only_a", "only_b", "p")),
        "pooled only_a", "pooled only_b", "pooled p", "a_wins", "b_wins",
    ]  # fmt: skip
    atomic_write_text(paths[2], _csv(pair_headers, [_pair_csv(p) for p in pairs]))
    return paths


def _row_csv(row: SeedRow) -> list[object]:
    mean, sd = row.mean_sd
    return [row.label, *(round(a, 4) for a in row.accuracy), round(mean, 4), round(sd, 4)]


def _pair_csv(pair: SeedPair) -> list[object]:
    cells: list[object] = [pair.a, pair.b]
    for (a, b), p in zip(pair.counts, pair.p_values(), strict=True):
        cells += [a, b, float(f"{p:.6g}")]
    only_a, only_b, p = pair.pooled()
    return [*cells, only_a, only_b, float(f"{p:.6g}"), pair.wins(), pair.losses()]


def _csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()
