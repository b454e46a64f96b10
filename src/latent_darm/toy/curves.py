"""Did the demo's projectors train to a plateau? Their held-out loss curves, one figure, and a plain test.

Every projector run keeps its validation history (``history.jsonl`` beside the projector, its own ``curve.png``).
Here the demo reads them back: the held-out loss at each validation, the relative drop over the last quarter of
the run (from the last validation at or before 75% of the steps to the end), and "on a plateau" when that drop is
under :data:`PLATEAU_DROP`. The training-free map and the text-LoRA executor have no held-out curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from latent_darm.projector.model import CONFIG_FILE

CURVES_FIGURE = "projector_curves.png"
PLATEAU_DROP = 0.02  # a held-out loss that fell less than 2% over the last quarter of training is flat


@dataclass(frozen=True)
class Curve:
    """One projector's held-out loss by optimizer step."""

    name: str
    steps: tuple[int, ...]
    losses: tuple[float, ...]

    @property
    def tail_drop(self) -> float:
        """Relative fall of the held-out loss over the last quarter of the run (negative: it rose)."""
        last = self.steps[-1]
        start = max(i for i, step in enumerate(self.steps) if step <= 0.75 * last)
        return (self.losses[start] - self.losses[-1]) / self.losses[start]

    @property
    def on_plateau(self) -> bool:
        return len(self.steps) >= 3 and self.tail_drop < PLATEAU_DROP

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": list(self.steps),
            "val_loss": list(self.losses),
            "tail_drop": round(self.tail_drop, 5),
            "on_plateau": self.on_plateau,
        }


def read_curve(name: str, projector_dir: Path) -> Curve | None:
    """The held-out curve of the projector in ``projector_dir`` (None when it was not trained: no history)."""
    history = projector_dir.parent / "history.jsonl"
    if not (projector_dir / CONFIG_FILE).exists() or not history.exists():
        return None
    points = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    validated = [(int(p["step"]), float(p["val_loss"])) for p in points if "val_loss" in p]
    if len(validated) < 2:
        return None
    steps, losses = zip(*validated, strict=True)
    return Curve(name, steps, losses)


def read_curves(projectors: dict[str, Path]) -> list[Curve]:
    return [c for name, path in projectors.items() if (c := read_curve(name, path)) is not None]


def plot_curves(curves: list[Curve], path: Path, title: str) -> None:
    """Held-out loss against step, one line per projector (log loss axis), written to ``path``."""
    from latent_darm.figures import agg_figure

    figure = agg_figure("darm demo (its figures)", figsize=(7, 4.5))
    axes = figure.add_subplot()
    for curve in curves:
        style = "-" if curve.on_plateau else "--"
        axes.plot(curve.steps, curve.losses, style, marker="o", markersize=3, label=curve.name)
    axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("held-out loss")
    axes.set_title(f"{title}\n(dashed: still falling, > {100 * PLATEAU_DROP:.0f}% over the last quarter)", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
