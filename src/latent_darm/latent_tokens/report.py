"""The run's Markdown table and its two figures: accuracy against latent tokens per step (the paper's Figure 1
shape: SCDM's curve between SIDM at 0 and MDM at all, AR at 0 and AR+MTP's windows beside them) and accuracy
against seconds per puzzle."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from latent_darm.evaluation.report import wilson_interval
from latent_darm.figures import agg_figure
from latent_darm.io import atomic_write_text
from latent_darm.latent_tokens.variants import AUTOREGRESSIVE, DIFFUSION, Variant, drawn, get_variant

TABLE_FILE = "results.md"
LATENT_FIGURE = "accuracy_vs_latent_tokens.png"
SECONDS_FIGURE = "accuracy_vs_seconds.png"
HEADERS = (
    "variant",
    "knob",
    "positions chosen by",
    "latent tokens / step",
    "accuracy %",
    "95% interval",
    "correct / n",
    "forward passes",
    "tokens / pass",
    "s / puzzle",
    "train loss",
    "1-step loss: latents / none",
    "1-step accuracy %: latents / none",
)


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["variant"], record["knob"], record["value"], record.get("selection", "random order")


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per table row (variant, knob value, selection), in first-seen order: seeds pooled — accuracy
    is the mean over seeds with its standard deviation (``accuracy_sd``), the interval is Wilson's over all the
    seeds' puzzles, the costs and the final training loss are means."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_row(record), []).append(record)
    out = []
    for rows in groups.values():
        if len(rows) == 1:
            out.append({**rows[0], "seeds": 1, "accuracy_sd": None})
            continue
        accuracies = [r["accuracy"] for r in rows]
        correct, n = sum(r["correct"] for r in rows), sum(r["n"] for r in rows)
        low, high = wilson_interval(correct, n)
        losses = [r["final_loss"] for r in rows if r.get("final_loss") is not None]
        out.append({
            **rows[0],
            **{k: statistics.fmean(r[k] for r in rows) for k in ("forward_passes", "tokens_per_pass",
                                                                  "seconds_per_puzzle")},
            "accuracy": statistics.fmean(accuracies), "accuracy_sd": statistics.stdev(accuracies),
            "correct": correct, "n": n, "ci_low": low, "ci_high": high, "seeds": len(rows),
            "final_loss": statistics.fmean(losses) if losses else None,
            "one_step": _mean_diagnostic([r.get("one_step") for r in rows]),
        })  # fmt: skip
    return out


def _mean_diagnostic(items: list[dict[str, float] | None]) -> dict[str, float] | None:
    if not items or any(not item for item in items):
        return None
    return {k: statistics.fmean(item[k] for item in items if item) for k in items[0] or {}}


def cells(record: dict[str, Any]) -> list[str]:
    knob = "–" if record["knob"] is None else f"{record['knob']}={record['value']}"
    accuracy = f"{100 * record['accuracy']:.1f}"
    if record.get("accuracy_sd") is not None:
        accuracy += f" ± {100 * record['accuracy_sd']:.1f} ({record['seeds']} seeds)"
    loss = record.get("final_loss")
    return [
        get_variant(record["variant"]).label,
        knob,
        record.get("selection", "random order"),
        str(record["latent_tokens"]),
        accuracy,
        f"{100 * record['ci_low']:.1f}–{100 * record['ci_high']:.1f}",
        f"{record['correct']}/{record['n']}",
        f"{record['forward_passes']:.0f}",
        f"{record['tokens_per_pass']:.1f}",
        f"{record['seconds_per_puzzle'] * 1000:.2f} ms" if record["seconds_per_puzzle"] < 1 else
        f"{record['seconds_per_puzzle']:.2f} s",
        "–" if loss is None else f"{loss:.3f}",
        *_one_step_cells(record.get("one_step")),
    ]  # fmt: skip


def _one_step_cells(diagnostic: dict[str, float] | None) -> list[str]:
    """The teacher-forced one-step diagnostic (:mod:`.diagnostic`) beside the accuracy: with the row's latent
    tokens and with none."""
    if not diagnostic:
        return ["–", "–"]
    return [
        f"{diagnostic['loss']:.3f} / {diagnostic['loss_none']:.3f}",
        f"{100 * diagnostic['accuracy']:.1f} / {100 * diagnostic['accuracy_none']:.1f}",
    ]


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The results table, one row per variant, knob value and selection (seeds pooled: mean ± sd)."""
    records = aggregate(records)
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADERS))) + "|",
    ]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"


def _series(records: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    return sorted((r for r in records if r["variant"] == variant), key=lambda r: r["latent_tokens"])


def _errors(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[100 * (r["accuracy"] - r["ci_low"]) for r in rows], [100 * (r["ci_high"] - r["accuracy"]) for r in rows]]


def _points(ax, rows: list[dict[str, Any]], xs: list[float], variant: Variant) -> None:
    ys = [100 * r["accuracy"] for r in rows]
    style = "-o" if len(rows) > 1 else variant.marker
    ax.errorbar(xs, ys, yerr=_errors(rows), fmt=style, color=variant.color, label=variant.label, capsize=3,
                markersize=8 if len(rows) == 1 else 5, alpha=0.9)  # fmt: skip


def _panel(record: dict[str, Any]) -> str:
    return get_variant(record["variant"]).panel


def latent_figure(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Left: diffusion — SCDM against n, SIDM at n = 0 and MDM at n = all. Right: autoregressive — AR+MTP against
    the window w, AR-NTP at w = all, AR (no latent tokens) as a dashed line."""
    fig = agg_figure("darm latent-tokens figures", figsize=(11, 4.5))
    left, right = fig.subplots(1, 2, sharey=True)
    for variant in drawn(DIFFUSION):
        rows = _series(records, variant.name)
        if rows:
            _points(left, rows, [r["latent_tokens"] for r in rows], variant)
    ticks = sorted({r["latent_tokens"] for r in records if _panel(r) == DIFFUSION})
    most = max([r["latent_tokens"] for r in records], default=0)
    left.set_xscale("symlog", linthresh=1)
    left.set_xticks(ticks)
    left.set_xticklabels([f"all\n({t})" if t == most else str(t) for t in ticks])
    left.set_xlabel("latent tokens per step n (masked positions computed besides the decoded one)")
    left.set_ylabel("test accuracy % (95% Wilson interval)")
    left.set_title("diffusion: SIDM = SCDM(0) … MDM = all", fontsize=10)
    windowed = [v for v in drawn(AUTOREGRESSIVE) if v.knob is not None]  # AR+MTP, AR-NTP: points against w
    windows = {r["value"]: r["latent_tokens"] + 1 for r in records if get_variant(r["variant"]) in windowed}
    for variant in windowed:
        rows = _series(records, variant.name)
        if rows:
            _points(right, rows, [r["latent_tokens"] + 1 for r in rows], variant)
    for variant in drawn(AUTOREGRESSIVE):
        if variant.knob is None:  # AR: no latent tokens, a line across
            for r in _series(records, variant.name):
                right.axhline(100 * r["accuracy"], color=variant.color, linestyle="--", label=variant.legend)
                right.axhspan(100 * r["ci_low"], 100 * r["ci_high"], color=variant.color, alpha=0.1)
    if windows:
        right.set_xscale("log", base=2)
        right.set_xticks(sorted(set(windows.values())))
        right.set_xticklabels([f"all\n({w})" if w == most + 1 else str(w) for w in sorted(set(windows.values()))])
        right.minorticks_off()
    right.set_xlabel("window w (MASK positions in the input; w − 1 latent tokens)")
    right.set_title("autoregressive: AR, AR+MTP(w), AR-NTP", fontsize=10)
    for ax in (left, right):
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def seconds_figure(records: list[dict[str, Any]], path: Path, title: str) -> None:
    fig = agg_figure("darm latent-tokens figures", figsize=(7.5, 4.5))
    ax = fig.subplots()
    for variant in drawn():
        rows = sorted((r for r in records if r["variant"] == variant.name), key=lambda r: r["seconds_per_puzzle"])
        if not rows:
            continue
        xs = [1000 * r["seconds_per_puzzle"] for r in rows]
        ax.errorbar(xs, [100 * r["accuracy"] for r in rows], yerr=_errors(rows), fmt="-o" if len(rows) > 1 else "s",
                    color=variant.color, label=variant.label, capsize=3)  # fmt: skip
        if variant.sweep is not None:
            for r, x in zip(rows, xs, strict=True):
                ax.annotate(f"{r['knob']}={r['value']}", (x, 100 * r["accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds per puzzle (batched decoding; shared CPU)")
    ax.set_ylabel("test accuracy % (95% Wilson interval)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(records: list[dict[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """results.md and the two PNGs in ``out_dir``; returns their paths."""
    table = out_dir / TABLE_FILE
    atomic_write_text(table, f"# {title}\n\n" + markdown_table(records))
    curves = aggregate([r for r in records if r.get("primary", True)])  # the run's own decoding rule
    latent_figure(curves, out_dir / LATENT_FIGURE, title)
    seconds_figure(curves, out_dir / SECONDS_FIGURE, title)
    return [table, out_dir / LATENT_FIGURE, out_dir / SECONDS_FIGURE]
