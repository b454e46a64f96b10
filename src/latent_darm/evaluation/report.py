"""``darm report``: accuracy and cost tables across results directories, and the paper's accuracy–cost figure.

For each benchmark, one row per configuration: accuracy with a 95% Wilson interval (honest at the small n of the
paper's 200-question protocol, and never outside [0, 1]), mean planner / executor / total tokens, mean forward
passes and seconds per question; a per-level table when the examples carry ``meta.level`` (DART-1…5); and a PNG of
accuracy against mean total tokens on a log axis (the paper's Figure 1), beside accuracy against forward passes.
Paired comparisons (latent against text at the same planner settings, or ``--pair``) count the questions only one
run got right and give the exact McNemar p-value: two runs on the same questions are not independent samples, so
overlapping Wilson intervals say little about which is better.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import Example
from latent_darm.evaluation.runner import (
    RESULTS_FILE,
    EvalSummary,
    examples_fingerprint,
    load_results,
    read_config,
    summarize,
)
from latent_darm.figures import agg_figure, colormap

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    # The interval always contains p; min/max only undo rounding (e.g. 0.9999999999999999 at p = 1).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the binomial(n = only_a + only_b, 1/2) probability of a split at least as
    uneven as the one seen (twice the smaller tail, capped at 1). Paired, so it only counts the discordant questions
    (one run right, the other wrong); 1.0 when there are none."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    # Exact integer arithmetic: the tail sum of C(n, i) over 2^n, with no floating-point underflow at large n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


# ----------------------------------------------------------------------------------------------------------------
# Runs and labels
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One results directory: its configuration and finished items."""

    directory: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    label: str

    @property
    def benchmark(self) -> str:
        return str(self.config.get("benchmark", "unknown"))

    @property
    def expected(self) -> int | None:
        """How many items the configuration selected, when the runner's caller recorded it."""
        examples = self.config.get("examples")
        return examples.get("n") if isinstance(examples, dict) else None


def load_run(directory: str | Path) -> Run:
    directory = Path(directory)
    config = read_config(directory)
    if config is None:
        raise DataError(f"{directory}: not a results directory (no config.json)")
    records = list(load_results(directory).values())
    if not records:
        raise DataError(f"{directory}: no finished items yet")
    check_records(directory, config, records)
    return Run(directory, config, records, config_label(config))


# Result fields the tables count: each, when present, must be a finite number >= 0 (``"seconds": "fast"`` is damage).
COUNTED_FIELDS = (
    "planner_tokens",
    "executor_tokens",
    "total_tokens",
    "planner_forward_passes",
    "executor_forward_passes",
    "seconds",
)
FINGERPRINTED = ("question", "gold", "answer_type")  # with ``id``: what ``examples_fingerprint`` hashes


def _check_record(where: str, record: dict[str, Any]) -> None:
    """The fields a report counts have the types the runner writes (``"correct": "yes"`` would count as correct)."""
    for name, required in (("correct", True), ("truncated", False)):
        value = record.get(name)
        if (required or value is not None) and not isinstance(value, bool):
            raise DataError(f"{where}: field '{name}' must be true or false, got {value!r}")
    for name in COUNTED_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise DataError(f"{where}: field '{name}' must be a number >= 0, got {value!r}")


def check_records(directory: Path, config: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """Every record well typed, and the records the run's selection (``config.json``'s ``examples``: count and
    hash): more records than the run selected, or a complete set whose ids, questions or golds hash differently,
    means the results file was edited or mixed with another run's. (A partial run can only be checked by count.)"""
    for record in records:
        _check_record(f"{directory / RESULTS_FILE}: item {record['id']!r}", record)
    examples = config.get("examples")
    if not isinstance(examples, dict) or not isinstance(examples.get("n"), int):
        return
    selected = examples["n"]
    if len(records) > selected:
        raise DataError(
            f"{directory}: {len(records)} results but the run selected {selected} items; the results file holds "
            "items of another selection"
        )
    fingerprinted = all(isinstance(r.get(k), str) for r in records for k in FINGERPRINTED)
    if len(records) == selected and fingerprinted and "sha256" in examples:
        rebuilt = [Example(r["id"], r["question"], r["gold"], r["answer_type"]) for r in records]
        if examples_fingerprint(rebuilt)["sha256"] != examples["sha256"]:
            raise DataError(
                f"{directory}: the results are not the run's selection (an id, question or gold differs from those "
                "config.json fingerprinted)"
            )


def _model_name(ref: Any) -> str:
    return Path(str(ref).rstrip("/")).name


def config_label(config: dict[str, Any]) -> str:
    """``label`` if the user gave one, else pipeline kind + pairing + plan length + models, from the spec."""
    label = config.get("label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    spec = config.get("spec")
    if not isinstance(spec, dict):
        pipeline = config.get("pipeline")
        return str(pipeline.get("pipeline", "run")) if isinstance(pipeline, dict) else "run"
    kind = str(spec.get("kind", "run"))
    planner = spec.get("planner") if isinstance(spec.get("planner"), dict) else {}
    executor = spec.get("executor") if isinstance(spec.get("executor"), dict) else {}
    if planner:
        head = f"{kind} {planner.get('kind', '?')}→{executor.get('kind', '?')}"
    else:
        head = kind + (" CoT" if spec.get("chain_of_thought") else "")
    settings = []
    plan_length = planner.get("gen_length") or planner.get("max_new_tokens")
    if plan_length:
        settings.append(f"plan {plan_length}")
    if spec.get("latent_noise"):
        settings.append(f"noise {spec['latent_noise']}")
    models = " → ".join(_model_name(role["model"]) for role in (planner, executor) if role.get("model"))
    return head + "".join(f", {s}" for s in settings) + (f" ({models})" if models else "")


def _unique_labels(runs: Sequence[Run]) -> None:
    """Two directories with the same label on one benchmark get their directory names appended."""
    seen: dict[tuple[str, str], int] = {}
    for run in runs:
        seen[(run.benchmark, run.label)] = seen.get((run.benchmark, run.label), 0) + 1
    for run in runs:
        if seen[(run.benchmark, run.label)] > 1:
            run.label = f"{run.label} [{run.directory.name}]"


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One configuration on one benchmark (or one level of it)."""

    label: str
    summary: EvalSummary
    interval: tuple[float, float]
    expected: int | None = None
    level: Any = None

    def csv_fields(self) -> dict[str, Any]:
        s = self.summary
        fields = {"label": self.label} if self.level is None else {"label": self.label, "level": self.level}
        return fields | {
            "n": s.n,
            "correct": s.correct,
            "accuracy": round(s.accuracy, 6),
            "ci95_low": round(self.interval[0], 6),
            "ci95_high": round(self.interval[1], 6),
            "planner_tokens": round(s.mean_planner_tokens, 3),
            "executor_tokens": round(s.mean_executor_tokens, 3),
            "total_tokens": round(s.mean_total_tokens, 3),
            "planner_forward_passes": round(s.mean_planner_forward_passes, 3),
            "executor_forward_passes": round(s.mean_executor_forward_passes, 3),
            "seconds_per_question": round(s.seconds_per_question, 4),
            "truncation_rate": round(s.truncation_rate, 6),
        }

    def markdown_cells(self) -> list[str]:
        s = self.summary
        n = f"{s.n}" if self.expected in (None, s.n) else f"{s.n}/{self.expected}"
        low, high = self.interval
        return [
            self.label,
            n,
            f"{100 * s.accuracy:.1f}",
            f"[{100 * low:.1f}, {100 * high:.1f}]",
            f"{s.mean_planner_tokens:.1f}",
            f"{s.mean_executor_tokens:.1f}",
            f"{s.mean_total_tokens:.1f}",
            f"{s.mean_planner_forward_passes:.1f} / {s.mean_executor_forward_passes:.1f}",
            f"{s.seconds_per_question:.3f}",
            f"{100 * s.truncation_rate:.1f}",
        ]


MARKDOWN_HEADERS = [
    "configuration",
    "n",
    "accuracy %",
    "95% CI",
    "planner tok",
    "executor tok",
    "total tok",
    "fwd passes (planner / executor)",
    "s/question",
    "truncated %",
]


def make_row(label: str, records: Sequence[dict[str, Any]], expected: int | None = None, level: Any = None) -> Row:
    summary = summarize(records)
    return Row(label, summary, wilson_interval(summary.correct, summary.n), expected, level)


def _level_key(level: Any) -> tuple[int, float, str]:
    try:
        return 0, float(level), ""
    except (TypeError, ValueError):
        return 1, 0.0, str(level)


def level_rows(run: Run) -> list[Row]:
    """One row per ``meta.level`` value; empty when the benchmark has no levels."""
    by_level: dict[Any, list[dict[str, Any]]] = {}
    for record in run.records:
        meta = record.get("meta")
        if isinstance(meta, dict) and meta.get("level") is not None:
            by_level.setdefault(meta["level"], []).append(record)
    return [make_row(run.label, by_level[level], level=level) for level in sorted(by_level, key=_level_key)]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(row) for row in rows)])


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    _write_dicts(path, [row.csv_fields() for row in rows])


def _write_dicts(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def slug(text: str) -> str:
    """A benchmark name as one plain file-name stem: no path separator, no leading dot (so never ``.`` or ``..``);
    the name comes from a results directory's ``config.json``, which is user input."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "benchmark"


# The files a benchmark's stem names: its table, levels, paired comparisons and figure.
TABLE, LEVELS, PAIRED, FIGURE = ".csv", "_levels.csv", "_paired.csv", "_accuracy_vs_tokens.png"


def file_stems(benchmarks: Sequence[str]) -> dict[str, str]:
    """{benchmark: file stem} such that no file of one benchmark is a file of another: distinct even when two
    names slug alike (``a/b`` and ``a_b``) or one is another's file name (``x_paired`` beside ``x``, whose paired
    table is ``x_paired.csv``), so no benchmark's files overwrite another's."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for benchmark in benchmarks:
        stem, n = slug(benchmark), 1
        while any(stem + suffix in taken for suffix in (TABLE, LEVELS, PAIRED, FIGURE)):
            n += 1
            stem = f"{slug(benchmark)}-{n}"
        stems[benchmark] = stem
        taken.update(stem + suffix for suffix in (TABLE, LEVELS, PAIRED, FIGURE))
    return stems


# ----------------------------------------------------------------------------------------------------------------
# Paired comparisons
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paired:
    """Run A against run B on the questions both answered (matched by question id): the exact McNemar test."""

    a: str
    b: str
    n: int
    a_correct: int
    b_correct: int
    only_a: int
    only_b: int

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.only_a, self.only_b)

    def csv_fields(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "a_correct": self.a_correct,
            "b_correct": self.b_correct,
            "only_a_right": self.only_a,
            "only_b_right": self.only_b,
            "p_mcnemar": float(f"{self.p_value:.6g}"),  # six significant digits: 2e-12 stays 2e-12, not 0.0
        }

    def markdown_cells(self) -> list[str]:
        def pct(k: int) -> str:
            return f"{100 * k / self.n:.1f}" if self.n else "-"

        return [
            self.a,
            self.b,
            str(self.n),
            pct(self.a_correct),
            pct(self.b_correct),
            str(self.only_a),
            str(self.only_b),
            format_p(self.p_value),
        ]


def format_p(p: float) -> str:
    """A p-value for a table: three significant digits down to 0.001, then scientific, and ``<1e-6`` below that
    (the exact value stays in the CSV), so a tiny p never prints as 0."""
    if p < 1e-6:
        return "<1e-6"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3g}"


PAIRED_HEADERS = ["A", "B", "n (both answered)", "A %", "B %", "only A right", "only B right", "McNemar p"]


def paired(a: Run, b: Run) -> Paired:
    """Compare two runs on the question ids both have; counts the discordant pairs for :func:`mcnemar_exact`."""
    right_a = {r["id"]: bool(r.get("correct")) for r in a.records}
    right_b = {r["id"]: bool(r.get("correct")) for r in b.records}
    shared = [i for i in right_a if i in right_b]
    return Paired(
        a.label,
        b.label,
        len(shared),
        sum(right_a[i] for i in shared),
        sum(right_b[i] for i in shared),
        sum(right_a[i] and not right_b[i] for i in shared),
        sum(right_b[i] and not right_a[i] for i in shared),
    )


def _spec(run: Run) -> dict[str, Any]:
    spec = run.config.get("spec")
    return spec if isinstance(spec, dict) else {}


# The planner settings that fix its plan and budget. A latent spec also stores latent-only ones (which rows, the
# remasking defaults it was trained with); those do not make two runs' planners differ.
# ``denoise_fraction`` (default 1.0: the whole process) is part of the budget: a plan stopped after half of its steps
# is not the full plan's comparison.
PLANNER_BUDGET_KEYS = ("kind", "model", "gen_length", "steps", "block_length", "threshold", "cache", "lookahead")
PLANNER_BUDGET_KEYS += ("lookahead_choice",)
BUDGET_DEFAULTS = {"denoise_fraction": 1.0, "lookahead_choice": "nearest"}


def _planner_budget(run: Run) -> dict[str, Any] | None:
    """The planner settings that fix the plan and its cost, plus the executor's kind (a latent DDLM→ARM run is
    compared with text DDLM→ARM, not with text DDLM→DDLM at the same planner)."""
    from latent_darm.models.family import renamed_settings  # runs stored before lookahead took over latent_tokens

    spec = _spec(run)
    planner, executor = spec.get("planner"), spec.get("executor")
    if not isinstance(planner, dict) or not isinstance(executor, dict):
        return None
    planner = renamed_settings(planner)
    budget = {key: planner.get(key) for key in PLANNER_BUDGET_KEYS}
    budget |= {key: planner.get(key, default) for key, default in BUDGET_DEFAULTS.items()}
    return budget | {"executor kind": executor.get("kind")}


def default_pairs(runs: Sequence[Run]) -> list[tuple[Run, Run]]:
    """Every latent run against every text run on the same benchmark whose planner has the same model, plan
    length, steps, block length, threshold, cache, latent-token setting and denoised fraction
    (:data:`PLANNER_BUDGET_KEYS`), and whose executor is of the same kind: the paper's comparison at an equal
    planner budget. Controls (latents with noise added) are not paired."""
    plain = [r for r in runs if not _spec(r).get("control")]  # the demo's control rows say what they control
    latent = [r for r in plain if _spec(r).get("kind") == "latent" and not _spec(r).get("latent_noise")]
    text = [r for r in plain if _spec(r).get("kind") == "text"]
    return [
        (a, b)
        for a in latent
        for b in text
        if a.benchmark == b.benchmark and _planner_budget(a) is not None and _planner_budget(a) == _planner_budget(b)
    ]


def _find_run(runs: Sequence[Run], name: str) -> Run:
    """A run named by its label, its directory name or its directory path."""
    hits = [r for r in runs if name in (r.label, r.directory.name, str(r.directory))]
    if len(hits) != 1:
        what = "no" if not hits else "more than one"
        raise ConfigError(f"--pair: {what} results directory matches {name!r} (give a label or directory name)")
    return hits[0]


def explicit_pairs(runs: Sequence[Run], pairs: Sequence[tuple[str, str]]) -> list[tuple[Run, Run]]:
    """``--pair A,B`` pairs, each side found by label or directory; both sides must be on one benchmark."""
    found = []
    for name_a, name_b in pairs:
        a, b = _find_run(runs, name_a), _find_run(runs, name_b)
        if a.benchmark != b.benchmark:
            raise ConfigError(f"--pair {name_a},{name_b}: the runs are on different benchmarks")
        found.append((a, b))
    return found


# ----------------------------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------------------------


MARKERS = "osD^vP*Xhp<>"


def _cost_axes(axes: Any, rows: Sequence[Row], cost: Callable[[Row], float], label: str) -> None:
    """One panel: accuracy with its 95% interval against a cost per question, log-x when every cost is > 0."""
    colours = colormap("tab20", "the accuracy-vs-tokens figure").colors
    for i, row in enumerate(rows):
        x, y = cost(row), 100 * row.summary.accuracy
        low, high = (100 * v for v in row.interval)
        axes.errorbar(
            [x],
            [y],
            yerr=[[y - low], [high - y]],
            fmt=MARKERS[i % len(MARKERS)],
            color=colours[(2 * i) % 20 + (i // 10) % 2],
            capsize=3,
            label=row.label,
        )
    axes.set_xscale("log" if all(cost(row) > 0 for row in rows) else "symlog")
    axes.set_xlabel(label)
    axes.set_ylim(-2, 102)  # points at 0 or 100 % stay whole
    axes.grid(True, which="both", alpha=0.3)


def plot_accuracy_vs_tokens(rows: Sequence[Row], path: Path, title: str) -> None:
    """Accuracy (with its 95% interval) against mean total tokens per question, log-x: the paper's Figure 1; and
    beside it against forward passes, the cost a planner step budget changes (its token count does not)."""
    figure = agg_figure("the accuracy-vs-tokens figure", figsize=(12, 4.8), layout="constrained")
    tokens, passes = figure.subplots(1, 2, sharey=True)
    _cost_axes(
        tokens, rows, lambda r: r.summary.mean_total_tokens, "mean total tokens per question (planner + executor)"
    )
    _cost_axes(
        passes,
        rows,
        lambda r: r.summary.mean_planner_forward_passes + r.summary.mean_executor_forward_passes,
        "mean forward passes per question (planner + executor)",
    )
    tokens.set_ylabel("accuracy (%)")
    figure.suptitle(title)
    passes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.savefig(path, dpi=110)


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------


def write_report(
    directories: Sequence[str | Path],
    out_dir: str | Path,
    pairs: Sequence[tuple[str, str]] | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``report.md`` plus, per benchmark, ``<stem>.csv``, ``<stem>_levels.csv`` (when levels exist),
    ``<stem>_paired.csv`` (when there are pairs to compare, see :func:`default_pairs`; ``pairs`` replaces that rule
    by explicit (A, B) names) and ``<stem>_accuracy_vs_tokens.png``, the stem the benchmark's name made a file name
    no other benchmark's files use (:func:`file_stems`); return the paths written. ``echo`` receives each
    benchmark's paired table as markdown."""
    if not directories:
        raise DataError("give at least one results directory")
    runs = [load_run(directory) for directory in directories]
    _unique_labels(runs)
    chosen = explicit_pairs(runs, pairs) if pairs else default_pairs(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = ["# Evaluation report", ""]
    benchmarks = sorted({run.benchmark for run in runs})
    stems = file_stems(benchmarks)
    for benchmark in benchmarks:
        members = [run for run in runs if run.benchmark == benchmark]
        rows = [make_row(run.label, run.records, run.expected) for run in members]
        name = stems[benchmark]
        csv_path, png_path = out_dir / (name + TABLE), out_dir / (name + FIGURE)
        write_csv(csv_path, rows)
        plot_accuracy_vs_tokens(rows, png_path, benchmark)
        written += [csv_path, png_path]
        sections += [f"## {benchmark}", "", markdown_table(MARKDOWN_HEADERS, [r.markdown_cells() for r in rows]), ""]
        levels = [row for run in members for row in level_rows(run)]
        if levels:
            levels_path = out_dir / (name + LEVELS)
            write_csv(levels_path, levels)
            written.append(levels_path)
            level_cells = [[r.label, str(r.level), *r.markdown_cells()[1:]] for r in levels]
            headers = [MARKDOWN_HEADERS[0], "level", *MARKDOWN_HEADERS[1:]]
            sections += ["### By level", "", markdown_table(headers, level_cells), ""]
        comparisons = [paired(a, b) for a, b in chosen if a.benchmark == benchmark]
        if comparisons:
            paired_path = out_dir / (name + PAIRED)
            _write_dicts(paired_path, [c.csv_fields() for c in comparisons])
            written.append(paired_path)
            table = markdown_table(PAIRED_HEADERS, [c.markdown_cells() for c in comparisons])
            sections += ["### Paired comparisons (exact McNemar test on the questions both answered)", "", table, ""]
            if echo is not None:
                echo(f"{benchmark}: paired comparisons (exact McNemar)\n{table}")
        sections += [f"![accuracy against tokens]({png_path.name})", ""]
    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(sections), encoding="utf-8")
    return [report_path, *written]
