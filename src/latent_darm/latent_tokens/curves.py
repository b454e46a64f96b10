"""Training curves: the held-out loss recorded while a variant trains, whether its loss has reached a plateau, and
the run's ``loss_curves.png`` and curve table.

The *tail drop* of a curve is the relative fall of the loss from its mean over steps [80%, 90%) of the run to its
mean over [90%, 100%], ``(before − after) / after``. A curve ends *falling* when the drop is at least
:data:`FLAT_DROP` (2%) and at least :data:`FLAT_ABSOLUTE` nats per answer token (a loss already at zero cannot fall
by a share), *rising* (the held-out loss of an overfitting model) when it climbs by as much, and *flat* otherwise;
a model is on a plateau (``flat`` true) when its curve no longer falls. The drop is judged on
the held-out loss when the history has it — the same objective on test rows never trained on, under the evaluated
(EMA) weights and one fixed masking draw, so it moves only with the weights and also shows overfitting — else on
the training loss (the 50-step means ``history.json`` keeps), whose scatter is large at batch 32: its standard
error is printed beside it. Under the cosine schedule the learning rate is small over the tail, so a curve still
falling there is far from converged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latent_darm.errors import DataError
from latent_darm.figures import agg_figure
from latent_darm.io import atomic_write_text, read_json_file
from latent_darm.latent_tokens.objectives import batch_loss
from latent_darm.latent_tokens.variants import get_variant

CURVES_FIGURE = "loss_curves.png"
FLAT_DROP = 0.02
FLAT_ABSOLUTE = 1e-4
HELDOUT_ROWS = 256  # held-out rows scored per point (the first of the test split)
HELDOUT_POINTS = 25  # points per curve besides the last step
HELDOUT_SEED = 12345  # one masking draw for every point, so the curve moves only with the weights


def heldout_every(steps: int) -> int:
    """Steps between held-out points: about :data:`HELDOUT_POINTS` per run (25 × 256 rows forward: ~3% of the
    cpu preset's 2,400 × 32 rows forward and backward)."""
    return max(1, steps // HELDOUT_POINTS)


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module,
    variant: str,
    rows: torch.Tensor,
    prompt_length: int,
    *,
    batch_size: int,
    window: int | None,
    noise_puzzle: bool,
    no_special_logits: bool,
    shadow: list[torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """The training objective on held-out ``rows`` (one fixed masking draw), scored with the ``shadow`` (EMA)
    weights when given — the ones that are evaluated — and the model's own weights restored after. No global RNG
    is touched, so the training run is bit-identical with or without it."""
    backup = [p.detach().clone() for p in model.parameters()] if shadow is not None else None
    if shadow is not None:
        for param, value in zip(model.parameters(), shadow, strict=True):
            param.copy_(value)
    model.eval()
    try:
        generator = torch.Generator().manual_seed(HELDOUT_SEED)
        spec = get_variant(variant)  # its objective and pattern
        config = model.config
        total = 0.0
        device_type = torch.device(model.device).type
        for start in range(0, rows.shape[0], batch_size):
            chunk = rows[start : start + batch_size]
            batch = spec.batch(chunk, prompt_length, config.mask_token_id, generator, window,
                               noise_puzzle=noise_puzzle, pad_id=config.pad_token_id)  # fmt: skip
            with torch.autocast(device_type=device_type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):  # fmt: skip
                total += float(batch_loss(model, batch, no_special_logits=no_special_logits)) * chunk.shape[0]
        return total / rows.shape[0]
    finally:
        model.train()
        if backup is not None:
            for param, value in zip(model.parameters(), backup, strict=True):
                param.copy_(value)


def _halves(values: list[float]) -> tuple[list[float], list[float]] | None:
    """The values over [80%, 90%) and [90%, 100%] of an evenly spaced curve (None below 10 points)."""
    n = len(values)
    if n < 10:
        return None
    return values[round(0.8 * n) : round(0.9 * n)], values[round(0.9 * n) :]


def _drop(before: list[float], after: list[float]) -> float:
    mean_before, mean_after = statistics.fmean(before), statistics.fmean(after)
    return (mean_before - mean_after) / mean_after if mean_after > 0 else 0.0


def tail_drop(curve: list[float]) -> float | None:
    """Relative fall from the mean over [80%, 90%) of ``curve`` to the mean over [90%, 100%] (None below 10
    points)."""
    halves = _halves(curve)
    return None if halves is None else _drop(*halves)


def tail_drop_se(curve: list[float]) -> float | None:
    """Standard error of :func:`tail_drop` from the scatter of the points in each tenth (None when too short)."""
    halves = _halves(curve)
    if halves is None or min(len(h) for h in halves) < 2:
        return None
    before, after = halves
    spread = statistics.variance(before) / len(before) + statistics.variance(after) / len(after)
    return math.sqrt(spread) / statistics.fmean(after) if statistics.fmean(after) > 0 else 0.0


def heldout_drop(points: list[tuple[int, float]], steps: int) -> float | None:
    """:func:`tail_drop` of held-out points (step, loss) over a run of ``steps`` (None without points in both
    tenths)."""
    before = [v for s, v in points if 0.8 * steps <= s < 0.9 * steps]
    after = [v for s, v in points if s >= 0.9 * steps]
    return _drop(before, after) if before and after else None


def trend(drop: float | None, level: float) -> str | None:
    """'falling', 'flat' or 'rising' for a tail drop at loss ``level`` (this module's docstring; None unknown)."""
    if drop is None:
        return None
    if abs(drop) < FLAT_DROP or abs(drop) * level < FLAT_ABSOLUTE:
        return "flat"
    return "falling" if drop > 0 else "rising"


def is_flat(drop: float | None, level: float) -> bool | None:
    """On a plateau: the curve no longer falls (None when unknown)."""
    end = trend(drop, level)
    return None if end is None else end != "falling"


@dataclass(frozen=True)
class Curve:
    """One trained model's curves, read from its ``history.json``."""

    name: str
    seed: int
    steps: int
    train: list[float]  # 50-step means of the training loss (the last one may cover fewer steps)
    heldout: list[tuple[int, float]]  # (step, held-out loss of the evaluated weights)
    final_loss: float | None

    @property
    def drop(self) -> float | None:
        return tail_drop(self.train)

    @property
    def heldout_drop(self) -> float | None:
        return heldout_drop(self.heldout, self.steps)

    @property
    def trend(self) -> str | None:
        """Judged on the held-out curve when there is one (little noise), else on the training curve."""
        if self.heldout_drop is not None:
            return trend(self.heldout_drop, self.heldout[-1][1])
        return trend(self.drop, self.train[-1] if self.train else 0.0)

    @property
    def flat(self) -> bool | None:
        return None if self.trend is None else self.trend != "falling"


def read_curve(directory: Path, name: str) -> Curve | None:
    """The curves in ``directory/history.json`` (None when it is missing or unreadable)."""
    try:
        history = read_json_file(directory / "history.json")
    except DataError:  # the model is trained and loaded; a lost history only costs its curve
        return None
    if not isinstance(history, dict) or not isinstance(history.get("loss_every_50"), list):
        return None
    settings = history.get("settings") or {}
    heldout = [(int(s), float(v)) for s, v in history.get("heldout_loss", [])]
    final = history.get("final_loss")
    return Curve(name, int(settings.get("seed", 0)), int(settings.get("steps", 0)),
                 [float(x) for x in history["loss_every_50"]], heldout,
                 float(final) if isinstance(final, (int, float)) else None)  # fmt: skip


def curve_summary(curve: Curve) -> dict[str, Any]:
    """The per-model numbers that go into ``results.jsonl`` and the curve table."""
    return {
        "final_loss": curve.final_loss,
        "tail_drop": curve.drop,
        "tail_drop_se": tail_drop_se(curve.train),
        "heldout_loss": curve.heldout[-1][1] if curve.heldout else None,
        "heldout_tail_drop": curve.heldout_drop,
        "trend": curve.trend,
        "flat": curve.flat,
    }


def _percent(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" + ("" if se is None else f" ± {100 * se:.1f}")


def curves_table(curves: list[Curve]) -> str:
    """One row per trained model: final losses, tail drops and whether it ended on a plateau."""
    lines = [
        "| model | seed | steps | final train loss | train loss drop, last 10% of steps (± se) | final held-out loss"
        f" | held-out drop, last 10% | curve ends (flat: drop within ±{FLAT_DROP:.0%}) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for curve in curves:
        summary = curve_summary(curve)
        held = summary["heldout_loss"]
        basis = " (held-out)" if curve.heldout_drop is not None else " (train)"
        lines.append(
            f"| {curve.name} | {curve.seed} | {curve.steps} | "
            + ("–" if curve.final_loss is None else f"{curve.final_loss:.4f}")
            + f" | {_percent(summary['tail_drop'], summary['tail_drop_se'])} | "
            + ("–" if held is None else f"{held:.4f}")
            + f" | {_percent(summary['heldout_tail_drop'])} | "
            + (curve.trend or "–")
            + ("" if curve.trend is None else basis)
            + " |"
        )
    return "\n".join(lines) + "\n"


def curves_figure(curves: list[Curve], path: Path, title: str) -> None:
    """Left the diffusion variants, right the autoregressive ones: training loss (50-step means, solid) and the
    held-out loss of the evaluated weights (dashed) per model, every seed in its model's colour, log scale; the
    shaded band is the last 20% of the steps, where flatness is measured."""
    fig = agg_figure("darm latent-tokens loss curves", figsize=(12, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    names = list(dict.fromkeys(c.name for c in curves))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    labelled: set[str] = set()
    for curve in curves:
        ax = axes[0 if curve.name.split()[0] in ("mdm", "sidm", "scdm") else 1]
        color = colors[curve.name]
        label = None if curve.name in labelled else curve.name
        labelled.add(curve.name)
        xs = [50 * i + min(50, curve.steps - 50 * i) / 2 for i in range(len(curve.train))]
        ax.plot(xs, curve.train, color=color, label=label, linewidth=1.2, alpha=0.85)
        if curve.heldout:
            ax.plot([s for s, _ in curve.heldout], [v for _, v in curve.heldout], color=color, linestyle="--",
                    linewidth=1, alpha=0.85)  # fmt: skip
    longest = max((c.steps for c in curves), default=0)
    for ax, what in zip(axes, ("diffusion", "autoregressive"), strict=True):
        if longest:
            ax.axvspan(0.8 * longest, longest, color="grey", alpha=0.1)
        ax.plot([], [], color="grey", label="training (solid)")
        ax.plot([], [], color="grey", linestyle="--", label="held-out, evaluated weights")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper right", fontsize=7, ncol=2)
    axes[0].set_ylabel("loss per answer token (nats)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


CURVES_TABLE = "loss_curves.md"


def write_curves(curves: list[Curve], out_dir: Path, title: str) -> list[Path]:
    """``loss_curves.md`` (the curve table) and ``loss_curves.png`` in ``out_dir``; nothing when no model has a
    history (returns the paths written)."""
    if not curves:
        return []
    table = out_dir / CURVES_TABLE
    atomic_write_text(table, f"# Training curves: {title}\n\n" + curves_table(curves))
    curves_figure(curves, out_dir / CURVES_FIGURE, f"Training curves: {title}")
    return [table, out_dir / CURVES_FIGURE]
