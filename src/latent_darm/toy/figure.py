"""The demo's forward-pass figure: DDLM→ARM accuracy against the planner's forward passes, text against latent.

The accuracy-against-tokens figure (``write_report``) cannot show the step sweep: a plan of 8 positions costs 8
planner tokens whether it took 8 denoising steps or 2. Here the x axis is the planner's forward passes per
question, the cost the sweep changes, and each series (text, each latent variant) is one line over the step
budgets; the plan-prefix executor is dashed (not the paper's setting). Partly denoised plans (the full budget
stopped early) are hollow markers of their series' colour at their forward passes, not joined by the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latent_darm.evaluation.report import Run, make_row
from latent_darm.extras import require
from latent_darm.figures import agg_figure, colormap

if TYPE_CHECKING:
    from latent_darm.toy.demo import DemoConfiguration

DASHED = ("plan-prefix",)


def plot_accuracy_vs_forward_passes(
    configurations: Sequence[DemoConfiguration], runs: Sequence[Run], path: Path, title: str
) -> None:
    """One line per series of ``configurations`` (those with a ``series``), accuracy % with 95% intervals."""
    by_label = {run.label: run for run in runs}
    series: dict[str, list[tuple[int, bool, float, float, float]]] = {}
    for configuration in configurations:
        if configuration.series is None or configuration.setting is None:
            continue
        row = make_row(configuration.label, by_label[configuration.label].records)
        partial = configuration.setting.denoise_fraction != 1.0
        low, high = (100 * v for v in row.interval)
        point = (configuration.setting.forward_passes, partial, 100 * row.summary.accuracy, low, high)
        series.setdefault(configuration.series, []).append(point)
    purpose = "the demo's forward-pass figure"
    figure = agg_figure(purpose, figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    colours = colormap("tab10", purpose).colors
    xs: set[int] = set()
    for i, (name, points) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        style = "--" if any(word in name for word in DASHED) else "-"
        shift = 1 + 0.025 * (i - (len(series) - 1) / 2)  # keep the interval bars apart
        for partial in (False, True):
            chosen = sorted(p for p in points if p[1] == partial)
            if not chosen:
                continue
            x = [p[0] * shift for p in chosen]
            y = [p[2] for p in chosen]
            errors = [[p[2] - p[3] for p in chosen], [p[4] - p[2] for p in chosen]]
            axes.errorbar(
                x,
                y,
                yerr=errors,
                fmt="o",
                linestyle="none" if partial else style,
                color=colour,
                markerfacecolor="white" if partial else colour,
                capsize=3,
                label=None if partial else name,
            )
            xs.update(p[0] for p in chosen)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(xs), [str(x) for x in sorted(xs)])
    axes.minorticks_off()
    axes.set_xlabel("planner forward passes per question")
    axes.set_ylabel("accuracy (%), 95% interval")
    axes.set_ylim(-2, 102)
    axes.grid(True, alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    line = require("matplotlib.lines", purpose).Line2D
    handles.append(line([], [], marker="o", color="grey", markerfacecolor="white", linestyle="none"))
    labels.append("hollow: full budget, partly denoised")
    axes.legend(handles, labels, fontsize="small", loc="best")
    axes.set_title(title)
    figure.savefig(path, dpi=110)
