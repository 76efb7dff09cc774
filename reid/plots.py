"""Pictures: training curves (more to come: rank lists, t-SNE, histograms).

Drawn with matplotlib's Agg backend (files only, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CURVE_DISTANCES = {"raw": ("raw", "tab:blue"), "classic": ("classic re-ranking", "tab:orange"),
                   "hard": ("hard-weight re-ranking", "tab:green")}


def plot_training_curves(metrics: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """``metrics.csv`` rows (one per evaluation, ``epoch`` 0 = zero-shot) -> a PNG with two panels:
    test mAP and rank-1 per distance against the epoch, and the mean training loss per epoch."""
    path = Path(path)
    fig, (scores_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for key, (label, colour) in CURVE_DISTANCES.items():
        for score, style in (("map", "-o"), ("rank1", ":x")):
            column = f"{score}_{key}"
            if column in metrics and metrics[column].notna().any():
                scores_ax.plot(metrics["epoch"], 100 * metrics[column], style, color=colour,
                               label=f"{'mAP' if score == 'map' else 'rank-1'} {label}")
    scores_ax.set(xlabel="epoch", ylabel="%", title="held-out scores")
    scores_ax.grid(alpha=0.3)
    scores_ax.legend(fontsize=7)
    trained = metrics[metrics["epoch"] > 0] if "train_loss" in metrics else metrics.iloc[0:0]
    if not trained.empty and trained["train_loss"].notna().any():
        loss_ax.plot(trained["epoch"], trained["train_loss"], "-o", color="tab:red")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="mean training loss")
    loss_ax.grid(alpha=0.3)
    for ax in (scores_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
