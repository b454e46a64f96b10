"""Training curves: the held-out loss recorded while a variant trains, whether its loss has reached a plateau, and
the run's ``loss_curves.png`` and curve table.

Flatness is measured on the training loss (the 50-step means a model's ``history.json`` keeps): the *tail drop* is
the relative fall of the loss from the mean over steps [80%, 90%) to the mean over [90%, 100%] of the run,
``(before − after) / after``. A curve is *flat* when that drop is below :data:`FLAT_DROP` (2%: the last 10% of the
steps took off less than 2% of the loss) or the absolute fall is below :data:`FLAT_ABSOLUTE` nats per answer token
(a loss already at zero cannot fall by a share). Under the cosine schedule the learning rate is small over the
tail, so a curve still falling there is far from converged. The held-out loss is the same objective on test rows
(never trained on) under the evaluated (EMA) weights: it shows overfitting, which the training loss cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latent_darm.errors import DataError
from latent_darm.figures import agg_figure
from latent_darm.io import atomic_write_text, read_json_file
from latent_darm.latent_tokens.objectives import batch_loss, make_batch

CURVES_FIGURE = "loss_curves.png"
FLAT_DROP = 0.02
FLAT_ABSOLUTE = 1e-4
HELDOUT_ROWS = 256  # held-out rows scored per point (the first of the test split)
HELDOUT_POINTS = 25  # points per curve besides the last step
HELDOUT_SEED = 12345  # one masking draw for every point, so the curve moves only with the weights


def heldout_every(steps: int) -> int:
    """Steps between held-out points: about :data:`HELDOUT_POINTS` per run (~3% of a CPU run's time)."""
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
        config = model.config
        total = 0.0
        device_type = torch.device(model.device).type
        for start in range(0, rows.shape[0], batch_size):
            chunk = rows[start : start + batch_size]
            batch = make_batch(variant, chunk, prompt_length, config.mask_token_id, generator, window,
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


def tail_drop(curve: list[float]) -> float | None:
    """Relative fall of the loss from the mean over [80%, 90%) of ``curve`` to the mean over [90%, 100%];
    None when the curve has fewer than 10 points."""
    n = len(curve)
    if n < 10:
        return None
    before, after = curve[round(0.8 * n) : round(0.9 * n)], curve[round(0.9 * n) :]
    mean_after = sum(after) / len(after)
    mean_before = sum(before) / len(before)
    return (mean_before - mean_after) / mean_after if mean_after > 0 else 0.0


def is_flat(curve: list[float]) -> bool | None:
    """The plateau rule of this module's docstring (None when the curve is too short to tell)."""
    drop = tail_drop(curve)
    if drop is None:
        return None
    n = len(curve)
    after = curve[round(0.9 * n) :]
    return drop < FLAT_DROP or drop * sum(after) / len(after) < FLAT_ABSOLUTE


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
    def flat(self) -> bool | None:
        return is_flat(self.train)


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
    drop = curve.drop
    return {
        "final_loss": curve.final_loss,
        "tail_drop": drop,
        "flat": curve.flat,
        "heldout_loss": curve.heldout[-1][1] if curve.heldout else None,
    }


def curves_table(curves: list[Curve]) -> str:
    """One row per trained model: steps, final training loss, tail drop, flat or not, final held-out loss."""
    lines = [
        f"| model | seed | steps | final train loss | loss drop over the last 10% of steps | flat (< {FLAT_DROP:.0%})"
        " | held-out loss (evaluated weights) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for curve in curves:
        summary = curve_summary(curve)
        drop, held = summary["tail_drop"], summary["heldout_loss"]
        lines.append(
            f"| {curve.name} | {curve.seed} | {curve.steps} | "
            + ("–" if curve.final_loss is None else f"{curve.final_loss:.4f}")
            + " | "
            + ("–" if drop is None else f"{100 * drop:.1f}%")
            + " | "
            + {True: "yes", False: "no", None: "–"}[curve.flat]
            + " | "
            + ("–" if held is None else f"{held:.4f}")
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
